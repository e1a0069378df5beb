"""inferflux's core: hook specs, contracts, plugin loading, config, engine, API and CLI.

The names most programs need are importable from here; they load their modules on first use,
so ``import inferflux_core`` stays cheap for plugins. See ``docs/public-api.md``.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("inferflux")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

if TYPE_CHECKING:
    from inferflux_core.bootstrap import create_app
    from inferflux_core.config import Settings, load_config
    from inferflux_core.contracts import ChatMessage, InferenceRequest
    from inferflux_core.engine import Engine, GenerationEvent, GenerationRequest
    from inferflux_core.errors import InferfluxError
    from inferflux_core.frontdoors import OpenAIDicts
    from inferflux_core.hookspecs import HOOKSPEC_VERSION, hookimpl
    from inferflux_core.plugins import PluginHost

#: Public name -> the module that defines it (imported on first access).
_EXPORTS = {
    "Engine": "inferflux_core.engine",
    "GenerationEvent": "inferflux_core.engine",
    "GenerationRequest": "inferflux_core.engine",
    "HOOKSPEC_VERSION": "inferflux_core.hookspecs",
    "InferfluxError": "inferflux_core.errors",
    "PluginHost": "inferflux_core.plugins",
    "Settings": "inferflux_core.config",
    "create_app": "inferflux_core.bootstrap",
    "ChatMessage": "inferflux_core.contracts",
    "InferenceRequest": "inferflux_core.contracts",
    "OpenAIDicts": "inferflux_core.frontdoors",
    "hookimpl": "inferflux_core.hookspecs",
    "load_config": "inferflux_core.config",
}

__all__ = [
    "HOOKSPEC_VERSION",
    "ChatMessage",
    "Engine",
    "GenerationEvent",
    "GenerationRequest",
    "InferenceRequest",
    "InferfluxError",
    "OpenAIDicts",
    "PluginHost",
    "Settings",
    "__version__",
    "create_app",
    "hookimpl",
    "load_config",
]


def __getattr__(name: str) -> Any:
    """Import a public name's module the first time the name is used."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'inferflux_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
