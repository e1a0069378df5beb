"""The bundled llama.cpp backend passes the conformance kit on the default model."""

from __future__ import annotations

from inferflux_core.testing import BackendConformance


class TestLlamaCppBackend(BackendConformance):
    """``llama_cpp`` with the default model (SmolLM2-135M-Instruct), loaded once."""

    backend_name = "llama_cpp"
