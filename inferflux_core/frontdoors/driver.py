"""The one stream/collect driver every generating front door runs on.

A front door (:class:`GenerationDoor`) only parses its wire request into typed requests
(:class:`Call`) and encodes typed events into its wire format. The driver opens the engine
requests (one per prompt; the usage reservation is made before each is submitted), merges
their events, passes them through the guardrails once, keeps the usage meter up to date, and
either collects them into one response or streams them as chunks.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from inferflux_core.contracts import GuardrailInput
from inferflux_core.contracts.generation import (
    Finish,
    InferenceEvent,
    InferenceRequest,
    UsageReport,
)
from inferflux_core.engine import Engine
from inferflux_core.engine.collect import Collected, collect
from inferflux_core.errors import InferfluxError
from inferflux_core.frontdoors.usage import Usage
from inferflux_core.guardrails import GuardrailChain, filter_events

Chunk = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Call:
    """A parsed wire request: the engine requests it makes (their choices numbered one after
    the other, ``per_request`` each), whether it streams, and the parsed ``wire`` request the
    encoder reads."""

    requests: tuple[InferenceRequest, ...]
    stream: bool
    wire: Any
    per_request: int = 1


class StreamEncoder(Protocol):
    """Turns one request's typed events into wire chunks."""

    def start(self) -> list[Chunk]:
        """Chunks sent before any event (a role announcement, an echo)."""

    def event(self, event: InferenceEvent) -> list[Chunk]:
        """Chunks for one event."""

    def end(self, usage: UsageReport) -> list[Chunk]:
        """Chunks after every choice finished (a usage chunk)."""


class GenerationDoor(Protocol):
    """What a generating front door provides the driver."""

    def parse(self, body: Any) -> Call:
        """The typed requests of a wire body; 400 naming the field (CPU work)."""

    def input_text(self, call: Call) -> str:
        """The request's text as guardrails and the audit log see it (CPU work)."""

    def encode(self, call: Call, result: Collected) -> Chunk:
        """The whole response."""

    def stream_encoder(self, call: Call) -> StreamEncoder:
        """An encoder for the streamed response."""


class Driver:
    """Runs front doors' calls on one engine, behind its guardrails."""

    def __init__(self, engine: Engine, guardrails: GuardrailChain | None = None) -> None:
        self.engine = engine
        self.guardrails = guardrails if guardrails else None

    async def events(
        self,
        call: Call,
        usage: Usage,
        guard: GuardrailInput | None = None,
    ) -> AsyncIterator[InferenceEvent]:
        """Open every request of ``call`` (refusals raise here) and return their events,
        merged and filtered; ``usage`` follows them."""
        if len(call.requests) == 1:
            events = await self.engine.open(call.requests[0], reserve=usage.reserve)
            first = getattr(events, "first", None)
            if isinstance(first, UsageReport):  # charged even if the client leaves now
                usage.record(first)
            merged = _metered(events, usage)
        else:
            merged = _metered(await _open_merged(self.engine, call, usage), usage)
        if self.guardrails is not None and guard is not None:
            merged = filter_events(merged, self.guardrails, guard)
        return merged

    async def whole(
        self, door: GenerationDoor, call: Call, usage: Usage, guard: GuardrailInput | None = None
    ) -> tuple[Chunk, Collected]:
        """The whole response, and what it was made from."""
        result = await collect(await self.events(call, usage, guard))
        return door.encode(call, result), result

    async def stream(
        self,
        door: GenerationDoor,
        call: Call,
        usage: Usage,
        guard: GuardrailInput | None = None,
        observe: Callable[[InferenceEvent], None] | None = None,
    ) -> AsyncIterator[Chunk]:
        """Submit now (refusals raise here, before any byte is sent); iterate for chunks.

        ``observe`` sees every event the client is sent (the audit line's text).
        """
        events = await self.events(call, usage, guard)
        return _chunks(door.stream_encoder(call), events, observe)


async def _chunks(
    encoder: StreamEncoder,
    events: AsyncIterator[InferenceEvent],
    observe: Callable[[InferenceEvent], None] | None,
) -> AsyncIterator[Chunk]:
    usage = UsageReport(0, 0)
    try:  # a client gone before the first event must free its sequences too
        for chunk in encoder.start():
            yield chunk
        async for event in events:
            if isinstance(event, UsageReport):
                usage = event
            elif isinstance(event, Finish) and event.reason == "error":
                raise event.error or InferfluxError("generation failed")
            if observe is not None:
                observe(event)
            for chunk in encoder.event(event):
                yield chunk
            if isinstance(event, Finish) and event.reason == "content_filter":
                return
        for chunk in encoder.end(usage):
            yield chunk
    finally:
        await _close(events)


async def _metered(
    events: AsyncIterator[InferenceEvent], usage: Usage
) -> AsyncIterator[InferenceEvent]:
    try:
        async for event in events:
            if isinstance(event, UsageReport):
                usage.record(event)
            yield event
    finally:
        await _close(events)


async def _open_merged(engine: Engine, call: Call, usage: Usage) -> AsyncIterator[InferenceEvent]:
    """Open the requests of ``call`` one after the other, each pumped into one queue as soon
    as it is open (so a backend with few slots starts the next as earlier ones finish; every
    refusal still raises here), and merge their events as one request's: request ``i``'s
    choice ``c`` becomes choice ``i * per_request + c``, usage is summed."""
    queue: asyncio.Queue[tuple[int, InferenceEvent | Exception | None]] = asyncio.Queue()

    async def pump(index: int, events: AsyncIterator[InferenceEvent]) -> None:
        try:
            async for event in events:
                await queue.put((index, event))
            await queue.put((index, None))
        except Exception as exc:
            await queue.put((index, exc))
        finally:
            await _close(events)

    opened: list[AsyncIterator[InferenceEvent]] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        for index, request in enumerate(call.requests):
            events = await engine.open(request, reserve=usage.reserve)
            opened.append(events)
            first = getattr(events, "first", None)
            if isinstance(first, UsageReport):
                usage.record(first, index)
            tasks.append(asyncio.create_task(pump(index, events)))
    except BaseException:
        for task in tasks:
            task.cancel()
        for events in opened:
            await _close(events)
        raise
    return _merged(queue, tasks, call.per_request)


async def _merged(
    queue: asyncio.Queue[tuple[int, InferenceEvent | Exception | None]],
    tasks: Sequence[asyncio.Task[None]],
    per_request: int,
) -> AsyncIterator[InferenceEvent]:
    reports = [UsageReport(0, 0)] * len(tasks)
    try:
        remaining = len(tasks)
        while remaining:
            index, item = await queue.get()
            if isinstance(item, Exception):
                raise item
            if item is None:
                remaining -= 1
                continue
            event = item
            if isinstance(event, UsageReport):
                reports[index] = event
                yield UsageReport(
                    sum(r.prompt_tokens for r in reports),
                    sum(r.completion_tokens for r in reports),
                    sum(r.cached_tokens for r in reports),
                )
            else:
                yield dataclasses.replace(event, choice=event.choice + index * per_request)
    finally:
        for task in tasks:
            task.cancel()


async def _close(events: AsyncIterator[InferenceEvent]) -> None:
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        await aclose()
