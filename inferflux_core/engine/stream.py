"""The caller's side of one in-flight request: an async iterator of its events."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from inferflux_core.contracts import ScheduledSequence, TokenLogprob
from inferflux_core.engine.requests import GenerationEvent, GenerationRequest
from inferflux_core.engine.speculation import Drafter
from inferflux_core.engine.text import TextAssembler
from inferflux_core.tracing.timing import RequestTiming


@dataclass(eq=False, slots=True)
class RequestState:
    """Per-request state the step thread keeps next to the scheduled sequence.

    ``leader`` is set on the other sequences of an ``n > 1`` group: they copy the leader's
    prompt KV instead of prefilling it. ``pending_logprobs`` holds the logprobs of tokens
    whose text the assembler still holds back.
    """

    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    assembler: TextAssembler
    queue: asyncio.Queue[GenerationEvent] = field(default_factory=asyncio.Queue)
    submitted_at: float = 0.0
    #: When the step thread first gave it a KV sequence (its queue wait ended).
    scheduled_at: float | None = None
    #: When its first token was sampled, and its latest one.
    first_token_at: float | None = None
    last_token_at: float = 0.0
    #: When it was released (finished, cancelled or failed; 0.0: not yet).
    finished_at: float = 0.0
    sequence: EngineSequence | None = None
    leader: EngineSequence | None = None
    followers: list[EngineSequence] = field(default_factory=list)
    pending_logprobs: collections.deque[TokenLogprob] = field(default_factory=collections.deque)
    #: Proposes its draft tokens (see :mod:`~inferflux_core.engine.speculation`); None until
    #: its first decode step asks.
    drafter: Drafter | None = None

    def release_logprobs(self, *, finished: bool) -> tuple[TokenLogprob, ...]:
        """The logprobs of the tokens whose text the assembler just released, in order."""
        pending = self.pending_logprobs
        n_released = min(self.assembler.take_released(), len(pending))
        released = tuple(pending.popleft() for _ in range(n_released))
        if finished:
            pending.clear()  # a cut stop string's tokens are never reported
        return released


@dataclass(eq=False, slots=True, kw_only=True)
class EngineSequence(ScheduledSequence):
    """The engine's sequence: what the scheduler sees, plus what only the engine reads.

    Schedulers are given these as plain :class:`ScheduledSequence` s; ``state`` and ``saved``
    are not part of the scheduler contract.
    """

    #: The request's state on the engine's side.
    state: RequestState
    #: The backend's saved KV while the sequence is preempted.
    saved: object | None = None
    #: Where the prompt's long region ends (:mod:`~inferflux_core.engine.row_classes`; 0
    #: without row classes: chunks as the scheduler plans them).
    long_end: int = 0


class RequestStream:
    """Iterate to receive a request's :class:`GenerationEvent` s; the last one has a finish reason.

    Leaving the iteration early (a client disconnect, ``break``, ``aclose()``) cancels the
    request, and the engine frees its KV sequence at the next step.
    """

    def __init__(self, state: RequestState, cancel: Callable[[RequestState], None]) -> None:
        self._state = state
        self._cancel = cancel
        self._finished = False

    @property
    def request_id(self) -> str:
        """The request's id."""
        return self._state.request.request_id

    @property
    def timing(self) -> RequestTiming:
        """When the request reached each phase (read it once its last event is delivered)."""
        s = self._state
        return RequestTiming(
            s.submitted_at, s.scheduled_at or 0.0, s.first_token_at or 0.0, s.finished_at
        )

    @property
    def n_prompt_tokens(self) -> int:
        """Number of prompt tokens."""
        return len(self._state.request.prompt_tokens)

    async def __aiter__(self) -> AsyncIterator[GenerationEvent]:
        try:
            while True:
                event = await self._state.queue.get()
                if event.finish_reason is not None:
                    self._finished = True
                yield event
                if self._finished:
                    return
        finally:
            if not self._finished:
                self.cancel()

    def cancel(self) -> None:
        """Stop generating; idempotent."""
        if not self._finished:
            self._finished = True
            self._cancel(self._state)


class Outbox:
    """The events of one step, handed to each event loop in one hop (not one per event)."""

    def __init__(self) -> None:
        self._events: dict[asyncio.AbstractEventLoop, list[tuple[RequestState, GenerationEvent]]]
        self._events = {}

    def put(self, state: RequestState, event: GenerationEvent) -> None:
        """Queue ``event`` for ``state``'s consumer (step thread)."""
        self._events.setdefault(state.loop, []).append((state, event))

    def flush(self) -> None:
        """Deliver what was put since the last flush."""
        events, self._events = self._events, {}
        for loop, batch in events.items():
            # A closed loop means nobody is listening any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_deliver, batch)


def _deliver(events: list[tuple[RequestState, GenerationEvent]]) -> None:
    for state, event in events:
        state.queue.put_nowait(event)
