"""The stage behind the step runner: sequence events made into typed inference events.

Each sequence's text goes through its choice's tool-call parser (when the request offered
tools); token logprobs get their text and bytes from the vocabulary, so no front door needs
it; usage is reported as it grows (prompt tokens once per prompt) and once more at the end.
``best_of`` candidates are run to their end, ranked by cumulative logprob, and the ``n``
best replayed as choices ``0..n-1``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Sequence

from inferflux_core.contracts import TokenLogprob
from inferflux_core.contracts.generation import (
    Finish,
    InferenceEvent,
    TextDelta,
    TextLogprob,
    TokenAlternative,
    UsageReport,
)
from inferflux_core.engine.prepare import Prepared
from inferflux_core.engine.requests import GenerationEvent
from inferflux_core.engine.stream import RequestStream
from inferflux_core.errors import InferfluxError
from inferflux_core.tools import ChoiceOutput

TokenBytes = Callable[[int], bytes]


class UsageCounter:
    """Prompt and generated tokens of a request's sequences; the prompt counts once."""

    def __init__(self, n_prompt: int, n_sequences: int) -> None:
        self.n_prompt = n_prompt
        self.generated = [0] * n_sequences

    def report(self) -> UsageReport:
        """Usage so far."""
        return UsageReport(self.n_prompt, sum(self.generated))


def text_logprobs(
    token_bytes: TokenBytes, entries: Iterable[TokenLogprob]
) -> tuple[TextLogprob, ...]:
    """Token logprobs with each token's text (U+FFFD for a part of a UTF-8 character, as
    OpenAI shows it) and bytes."""
    out = []
    for entry in entries:
        raw = token_bytes(entry.token)
        top = tuple(
            TokenAlternative(
                token_bytes(t).decode("utf-8", errors="replace"), token_bytes(t), logprob
            )
            for t, logprob in entry.top
        )
        out.append(TextLogprob(raw.decode("utf-8", errors="replace"), raw, entry.logprob, top))
    return tuple(out)


def echo_delta(prepared: Prepared, choice: int, token_bytes: TokenBytes) -> TextDelta:
    """The echoed prompt as choice ``choice``'s first text, its tokens as logprob entries."""
    model = prepared.model
    text = model.backend.detokenize(list(prepared.echo))
    logprobs: tuple[TextLogprob, ...] = ()
    if prepared.keep_logprobs:
        logprobs = tuple(
            TextLogprob(token_bytes(t).decode("utf-8", errors="replace"), token_bytes(t), 0.0)
            for t in prepared.echo
        )
    return TextDelta(choice, text, logprobs, echo=True)


def finish_event(choice: int, output: ChoiceOutput, event: GenerationEvent) -> Finish:
    """A sequence's last event as the choice's finish."""
    reason = output.finish_reason(event.finish_reason or "stop")
    if reason == "error":
        error = event.error
        if not isinstance(error, InferfluxError):
            error = InferfluxError("generation failed")
        return Finish(choice, "error", error)
    stop_sequence = event.stop_sequence if reason == "stop" else None
    return Finish(choice, reason, stop_sequence=stop_sequence)  # type: ignore[arg-type]


def choice_events(
    prepared: Prepared,
    output: ChoiceOutput,
    choice: int,
    event: GenerationEvent,
    token_bytes: TokenBytes,
) -> list[InferenceEvent]:
    """The typed events for one sequence event of output ``choice``."""
    logprobs = text_logprobs(token_bytes, event.logprobs) if prepared.keep_logprobs else ()
    events: list[InferenceEvent] = list(output.push(event.text))
    if logprobs:
        first = next((i for i, e in enumerate(events) if isinstance(e, TextDelta)), None)
        if first is None:
            events.insert(0, TextDelta(choice, "", logprobs))
        else:
            delta = events[first]
            assert isinstance(delta, TextDelta)
            events[first] = TextDelta(choice, delta.text, logprobs)
    if event.finish_reason is not None:
        events.extend(output.finish())
        events.append(finish_event(choice, output, event))
    return events


async def step_events(
    prepared: Prepared, streams: Sequence[RequestStream], token_bytes: TokenBytes
) -> AsyncIterator[InferenceEvent]:
    """The request's typed events from its sequences' streams; leaving early cancels them."""
    counter = UsageCounter(streams[0].n_prompt_tokens, len(streams))
    try:
        yield counter.report()
        if prepared.ranks:
            async for event in _ranked(prepared, streams, token_bytes, counter):
                yield event
        else:
            outputs = [ChoiceOutput(prepared.plan, i) for i in range(len(streams))]
            if prepared.echo:
                for choice in range(len(streams)):
                    yield echo_delta(prepared, choice, token_bytes)
            async for index, step in merge(streams):
                counter.generated[index] = step.n_generated_tokens
                for typed in choice_events(prepared, outputs[index], index, step, token_bytes):
                    yield typed
                yield counter.report()
    finally:
        for stream in streams:
            stream.cancel()


async def _ranked(
    prepared: Prepared,
    streams: Sequence[RequestStream],
    token_bytes: TokenBytes,
    counter: UsageCounter,
) -> AsyncIterator[InferenceEvent]:
    """Run every candidate to its end; replay the ``n`` likeliest as choices."""
    results = await asyncio.gather(*(_collect(s, counter, i) for i, s in enumerate(streams)))
    order = sorted(range(len(results)), key=lambda i: _cumulative(results[i]), reverse=True)
    for choice, index in enumerate(order[: prepared.n]):
        output = ChoiceOutput(prepared.plan, choice)
        if prepared.echo:
            yield echo_delta(prepared, choice, token_bytes)
        for event in results[index]:
            for typed in choice_events(prepared, output, choice, event, token_bytes):
                yield typed
    yield counter.report()


async def _collect(
    stream: RequestStream, counter: UsageCounter, index: int
) -> list[GenerationEvent]:
    events = []
    async for event in stream:
        counter.generated[index] = event.n_generated_tokens
        events.append(event)
        if event.finish_reason == "error":
            error = event.error
            raise (
                error if isinstance(error, InferfluxError) else InferfluxError("generation failed")
            )
    return events


def _cumulative(events: list[GenerationEvent]) -> float:
    return sum(entry.logprob for event in events for entry in event.logprobs)


async def merge(streams: Sequence[RequestStream]) -> AsyncIterator[tuple[int, GenerationEvent]]:
    """Interleave several streams' events as they come, tagged with the stream's index."""
    if len(streams) == 1:
        async for event in streams[0]:
            yield 0, event
        return
    queue: asyncio.Queue[tuple[int, GenerationEvent]] = asyncio.Queue()

    async def pump(index: int, stream: RequestStream) -> None:
        async for event in stream:
            await queue.put((index, event))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        remaining = len(streams)
        while remaining:
            index, event = await queue.get()
            if event.finish_reason is not None:
                remaining -= 1
            yield index, event
    finally:
        for task in tasks:
            task.cancel()
        for stream in streams:
            stream.cancel()
