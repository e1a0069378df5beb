"""A request's typed events gathered into its whole result (what a non-streamed reply needs)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from inferflux_core.contracts.generation import (
    Finish,
    InferenceEvent,
    TextDelta,
    TextLogprob,
    ToolCallDelta,
    UsageReport,
)
from inferflux_core.errors import GuardrailError, InferfluxError


@dataclass(slots=True)
class CalledTool:
    """One complete tool call of a choice; ``arguments`` is JSON text."""

    id: str
    name: str
    arguments: str = ""


@dataclass(slots=True)
class ChoiceResult:
    """One output's whole text, tool calls, logprobs and finish reason.

    ``echo`` is the repeated prompt (``echo``), kept apart from the generated ``text``, with
    its tokens in ``echo_logprobs``. ``stop_sequence`` is the stop string that ended it, if
    one did (and the backend says which).
    """

    text: str = ""
    tool_calls: list[CalledTool] = field(default_factory=list)
    finish_reason: str | None = None
    logprobs: list[TextLogprob] = field(default_factory=list)
    echo: str = ""
    echo_logprobs: list[TextLogprob] = field(default_factory=list)
    stop_sequence: str | None = None


@dataclass(slots=True)
class Collected:
    """Every choice of a request, in order, and what it used."""

    choices: list[ChoiceResult]
    usage: UsageReport


class Collector:
    """Folds events into a :class:`Collected`, one at a time."""

    def __init__(self) -> None:
        self._choices: dict[int, ChoiceResult] = {}
        self._texts: dict[int, list[str]] = {}
        self.usage = UsageReport(0, 0)

    def add(self, event: InferenceEvent) -> None:
        """Fold ``event`` in; a failed choice raises its error, a blocked one a 400."""
        if isinstance(event, UsageReport):
            self.usage = event
            return
        choice = self._choices.setdefault(event.choice, ChoiceResult())
        if isinstance(event, TextDelta):
            if event.echo:
                choice.echo += event.text
                choice.echo_logprobs.extend(event.logprobs)
            else:
                self._texts.setdefault(event.choice, []).append(event.text)
                choice.logprobs.extend(event.logprobs)
        elif isinstance(event, ToolCallDelta):
            if event.id is not None:
                choice.tool_calls.append(CalledTool(event.id, event.name or ""))
            choice.tool_calls[event.call].arguments += event.arguments
        elif isinstance(event, Finish):
            if event.reason == "error":
                raise event.error or InferfluxError("generation failed")
            if event.reason == "content_filter":
                raise GuardrailError("the response was blocked by a guardrail")
            choice.finish_reason = event.reason
            choice.stop_sequence = event.stop_sequence

    def result(self) -> Collected:
        """The choices gathered so far, by index."""
        for index, texts in self._texts.items():
            self._choices[index].text = "".join(texts)
        return Collected([self._choices[i] for i in sorted(self._choices)], self.usage)


async def collect(
    events: AsyncIterator[InferenceEvent],
    on_event: Callable[[InferenceEvent], None] | None = None,
) -> Collected:
    """Run ``events`` to the end and gather them; ``on_event`` sees each one as it comes (a
    usage meter), so a request cut short is still accounted for."""
    collector = Collector()
    try:
        async for event in events:
            if on_event is not None:
                on_event(event)
            collector.add(event)
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
    return collector.result()


class Primed:
    """A request's events whose first one was already taken (so that its work has started and
    closing it, even before reading, releases what it holds); ``first`` is that event."""

    def __init__(self, first: InferenceEvent, rest: AsyncIterator[InferenceEvent]) -> None:
        self.first = first
        self._pending: InferenceEvent | None = first
        self._rest = rest

    def __aiter__(self) -> Primed:
        return self

    async def __anext__(self) -> InferenceEvent:
        if self._pending is not None:
            event, self._pending = self._pending, None
            return event
        return await anext(self._rest)

    async def aclose(self) -> None:
        """Stop the request."""
        self._pending = None
        aclose = getattr(self._rest, "aclose", None)
        if aclose is not None:
            await aclose()
