"""The local model registry: models pulled into one folder, each with a manifest.

``ModelRegistry`` reads and changes the folder (:mod:`~inferflux_core.registry.store`);
:func:`~inferflux_core.registry.pull.pull_model` fetches a model into it. This package knows
nothing of the configuration: callers pass the folder and the limits in. See docs/registry.md.
"""

from inferflux_core.registry.manifest import Manifest
from inferflux_core.registry.names import validate_model_name, validate_sha256
from inferflux_core.registry.store import DEFAULT_REGISTRY_PATH, ModelRegistry

__all__ = [
    "DEFAULT_REGISTRY_PATH",
    "Manifest",
    "ModelRegistry",
    "validate_model_name",
    "validate_sha256",
]
