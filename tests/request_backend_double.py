"""A test double of a request-level backend, for testing the engine's request runner in
isolation: it "generates" by echoing the last user message back, word by word.

Options (``models[].options``): ``capabilities`` (a dict of
:class:`RequestBackendCapabilities` fields), ``ready`` (False: ``readiness`` says not),
``hold`` (True: each request waits for :meth:`EchoRequestBackend.release` before its output).
The class records what it was asked: ``requests``, ``aborted``, ``started``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from inferflux_core.contracts import (
    Finish,
    InferenceEvent,
    InferenceRequest,
    Readiness,
    RequestBackend,
    RequestBackendCapabilities,
    RequestBackendSpec,
    TextDelta,
    UsageReport,
)
from inferflux_core.hookspecs import hookimpl

NAME = "echo_request_double"


class EchoRequestBackend(RequestBackend):
    """Echoes the last user message (or the prompt) back, one word per event."""

    instances: list[EchoRequestBackend] = []

    def __init__(self, spec: RequestBackendSpec) -> None:
        self.spec = spec
        self.capabilities = RequestBackendCapabilities(**spec.options.get("capabilities", {}))
        self.ready = bool(spec.options.get("ready", True))
        self.hold = bool(spec.options.get("hold", False))
        self.requests: list[InferenceRequest] = []
        self.aborted: list[str] = []
        self.started = False
        self._gate = asyncio.Event()
        EchoRequestBackend.instances.append(self)

    async def start(self) -> None:
        self.started = True

    def release(self) -> None:
        """Let held requests produce their output."""
        self._gate.set()

    async def generate(self, request: InferenceRequest) -> AsyncIterator[InferenceEvent]:
        self.requests.append(request)
        yield UsageReport(prompt_tokens=len(_text(request).split()), completion_tokens=0)
        if self.hold:
            await self._gate.wait()
        words = _text(request).split()
        for choice in range(request.options.n):
            for index, word in enumerate(words):
                yield TextDelta(choice, word if index == 0 else " " + word)
            yield Finish(choice, "stop")
        yield UsageReport(len(words), len(words) * request.options.n)

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)

    async def readiness(self) -> Readiness:
        return Readiness(True) if self.ready else Readiness(False, "the double says no")

    def tokenize(self, text: str) -> list[int]:
        return [len(word) for word in text.split()]


def _text(request: InferenceRequest) -> str:
    if request.messages:
        users = [m.content or "" for m in request.messages if m.role == "user"]
        return users[-1] if users else ""
    return (
        request.prompt
        if isinstance(request.prompt, str)
        else " ".join(map(str, request.prompt or ()))
    )


class EchoDoublePlugin:
    """Registers the double under :data:`NAME`."""

    @staticmethod
    @hookimpl
    def register_backends() -> dict[str, type[RequestBackend]]:
        """The double."""
        return {NAME: EchoRequestBackend}
