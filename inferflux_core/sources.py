"""Turning a model ``source`` string from the config into a local file path.

Plugins go first: the ``resolve_model_source`` hook (*decide*) may claim any source and answer
with a local file. Then the built-in forms: a plain path or ``file://`` URL to a ``.gguf``
file, ``pypi:<distribution>`` for a model shipped inside an installed Python distribution
(the distribution is located through its metadata, never imported), and ``registry:<name>``
for a model pulled into the local registry (docs/registry.md). Remote sources (``https://``,
``hf:``) are never fetched at load time: ``inferflux pull`` them into the registry first.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from inferflux_core.errors import ConfigError, InvalidRequestError
from inferflux_core.registry.local import distribution_gguf, existing_file
from inferflux_core.registry.store import ModelRegistry

if TYPE_CHECKING:
    from inferflux_core.plugins import PluginHost

PYPI_PREFIX = "pypi:"
FILE_PREFIX = "file://"
REGISTRY_PREFIX = "registry:"
REMOTE_PREFIXES = ("https://", "http://", "hf:")


def resolve_model_source(
    source: str, plugins: PluginHost | None = None, *, registry_path: Path | None = None
) -> Path:
    """The local path of the model file ``source`` names: a plugin's answer to the
    ``resolve_model_source`` hook if one answers, else the built-in forms'.

    ``registry_path`` is the registry folder ``registry:NAME`` looks in (the config's
    ``registry.path``; None: the default, ``~/.cache/inferflux/models``). Raises
    :class:`~inferflux_core.errors.ModelFileError` when the file, distribution or registered
    model is missing, and :class:`~inferflux_core.errors.ConfigError` for a source form that
    cannot be loaded as it is.
    """
    if plugins is not None:
        answer = plugins.first_result("resolve_model_source", source=source)
        if answer is not None:
            return existing_file(Path(answer).expanduser())
    if source.startswith(PYPI_PREFIX):
        return distribution_gguf(source.removeprefix(PYPI_PREFIX).strip())
    if source.startswith(REGISTRY_PREFIX):
        return _from_registry(source.removeprefix(REGISTRY_PREFIX), registry_path)
    if source.startswith(REMOTE_PREFIXES):
        raise ConfigError(
            f"model source {source!r} is remote: pull it first: inferflux pull {source} "
            "--name NAME, then use source registry:NAME"
        )
    if source.startswith(FILE_PREFIX):
        return existing_file(Path(unquote(urlparse(source).path)))
    return existing_file(Path(source).expanduser())


def find_default_model_path() -> Path:
    """The path of the default model (the config's ``DEFAULT_MODEL_SOURCE``)."""
    from inferflux_core.config import DEFAULT_MODEL_SOURCE

    return resolve_model_source(DEFAULT_MODEL_SOURCE)


def _from_registry(name: str, registry_path: Path | None) -> Path:
    """The GGUF file of the registered model ``name``."""
    try:
        return ModelRegistry(registry_path).model_file(name)
    except InvalidRequestError as exc:
        raise ConfigError(f"model source 'registry:{name}': {exc.message}") from None
