"""The llama.cpp backend plugin: GGUF models on CPU, Metal, CUDA or ROCm via llama-cpp-python.

Loading this plugin does not import llama-cpp-python; constructing the backend does, and
raises a ConfigError saying how to install it when it is missing.
"""

from __future__ import annotations

from inferflux_core.contracts import StepBackend
from inferflux_core.hookspecs import hookimpl
from inferflux_plugins.backends.llama_cpp.backend import LlamaCppBackend

__all__ = ["LlamaCppBackend"]


@hookimpl
def register_backends() -> dict[str, type[StepBackend]]:
    """Register the ``llama_cpp`` backend."""
    return {"llama_cpp": LlamaCppBackend}
