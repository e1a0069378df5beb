"""Finding the plugin under test the way ``inferflux serve`` does, and the files it needs."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from inferflux_core.config import DEFAULT_MODEL_SOURCE, ModelConfig
from inferflux_core.contracts import DeviceInfo
from inferflux_core.engine.backend_choice import CPU_CANDIDATES
from inferflux_core.engine.devices import select_device
from inferflux_core.errors import ConfigError
from inferflux_core.plugins import PluginHost
from inferflux_core.sources import resolve_model_source

#: ``{tmp}`` in a string option is replaced by a fresh directory for each test.
TMP_PLACEHOLDER = "{tmp}"


def plugin_factory(family: str, name: str) -> Any:
    """The factory registered as ``name`` in ``family`` by the installed ``inferflux`` plugins.

    Loads every entry point, as the server does, so the kit tests what ``inferflux serve``
    would load; raises :class:`~inferflux_core.errors.PluginError` naming the known names.
    """
    return PluginHost().get(family, name)


def cpu_device() -> DeviceInfo:
    """The CPU as the installed device plugins describe it (with its features: on a CPU with
    Intel AMX, ``repack: auto`` turns llama.cpp's repacked weights off, which crash there), or
    a bare CPU when no plugin describes one."""
    try:
        return select_device(PluginHost(), "cpu", ("cpu",))
    except ConfigError:
        return DeviceInfo(kind="cpu", present=True, name="cpu")


def model_path_for(backend_name: str, source: str | None = None) -> Path:
    """The model file to load ``backend_name`` with.

    ``source`` takes any form a config's ``models[].source`` takes (a path, ``file://``,
    ``pypi:<distribution>``, or one an installed plugin's ``resolve_model_source`` hook
    resolves). Without one, the default backend gets the default model (what
    ``inferflux serve`` loads with no configuration); any other backend needs a source.
    """
    if source:
        return resolve_model_source(source, PluginHost())
    default_backends = {ModelConfig.model_fields["backend"].default}
    default_backends.update(name for name, _ in CPU_CANDIDATES)  # what ``auto`` picks on a CPU
    if backend_name in default_backends:
        return resolve_model_source(DEFAULT_MODEL_SOURCE)
    raise LookupError(
        f"backend {backend_name!r} has no default model: pass --inferflux-model=PATH, or "
        "override the backend_model_path fixture"
    )


def fill_tmp(options: Mapping[str, Any], directory: Path) -> dict[str, Any]:
    """``options`` with ``{tmp}`` in every string value (nested too) replaced by ``directory``."""
    return {key: _fill(value, str(directory)) for key, value in options.items()}


def _fill(value: Any, directory: str) -> Any:
    if isinstance(value, str):
        return value.replace(TMP_PLACEHOLDER, directory)
    if isinstance(value, Mapping):
        return {key: _fill(item, directory) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_fill(item, directory) for item in value]
    return value
