"""The configured guardrails, in order: prompts in, and output out (whole or streamed).

Every guardrail judges the prompt; the first refusal wins (400, ``content_blocked``). A
guardrail that fails — raises, or cannot reach its policy server — refuses the request too
(503, ``guardrail_unavailable``): guardrails fail closed. Output filters see each choice's
typed events (text, tool-call arguments) as they stream, holding back what might still turn
into a blocked phrase; a blocked output ends with ``Finish(reason="content_filter")``, which
every front door renders its own way (a whole response is refused with a 400). Token
logprobs follow the text they belong to (``guardrail_logprobs``): nothing of a blocked output
reaches the client through them. No wire format is known here.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, Final, TypeVar

from inferflux_core.config import GuardrailConfig
from inferflux_core.contracts import Guardrail, GuardrailInput, OutputFilter
from inferflux_core.contracts.generation import (
    Finish,
    InferenceEvent,
    TextDelta,
    ToolCallDelta,
    UsageReport,
)
from inferflux_core.errors import (
    ConfigError,
    GuardrailError,
    GuardrailUnavailableError,
    InferfluxError,
    PluginError,
)
from inferflux_core.guardrail_logprobs import LogprobsGate
from inferflux_core.plugins import PluginHost

log = logging.getLogger(__name__)

CONTENT_FILTER: Final = "content_filter"
_T = TypeVar("_T")


class FilterChain:
    """One choice's output through every guardrail's filter, in order."""

    def __init__(
        self, filters: Sequence[tuple[str, str, OutputFilter]], request_id: str = ""
    ) -> None:
        """``filters`` holds (guardrail name, plugin name, filter) in chain order."""
        self._filters = filters
        self._request_id = request_id

    def push(self, text: str) -> tuple[str, bool]:
        """Text safe to send now, and whether the output is blocked."""
        for name, plugin, output_filter in self._filters:
            if not text:
                break
            text, blocked = self._guarded(name, plugin, output_filter.push, text)
            if blocked:
                return "", True
        return text, False

    def finish(self) -> tuple[str, bool]:
        """The output ended: release what every filter held back (each checked by the next)."""
        text = ""
        for name, plugin, output_filter in self._filters:
            if text:
                text, blocked = self._guarded(name, plugin, output_filter.push, text)
                if blocked:
                    return "", True
            text += self._guarded(name, plugin, output_filter.flush)
        return text, False

    def _guarded(self, name: str, plugin: str, method: Callable[..., _T], *args: Any) -> _T:
        try:
            return method(*args)
        except InferfluxError:
            raise
        except Exception as exc:
            raise unavailable(name, plugin, self._request_id, "output", exc) from None


class GuardrailChain:
    """The guardrails of one server, built from ``guardrails`` in the configuration."""

    def __init__(
        self,
        guardrails: Sequence[tuple[str, Guardrail]] = (),
        plugins: Mapping[str, str] | None = None,
    ) -> None:
        """``guardrails`` in order; ``plugins`` maps a guardrail's name to its plugin's."""
        self._guardrails = list(guardrails)
        self._plugins = dict(plugins or {})

    @classmethod
    def from_config(cls, configs: Sequence[GuardrailConfig], plugins: PluginHost) -> GuardrailChain:
        """Construct each configured guardrail; a bad option stops startup naming it."""
        built = []
        owners = {}
        for index, config in enumerate(configs):
            factory = plugins.get("guardrails", config.name)
            owner = owners[config.name] = plugins.plugin_of("guardrails", config.name)
            try:
                built.append((config.name, factory(**config.options)))
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"guardrails.{index} ({config.name}): {exc}") from None
            except InferfluxError:
                raise
            except Exception as exc:
                raise PluginError(
                    f"guardrails.{index}: guardrail {config.name!r} (plugin {owner!r}) failed "
                    f"to start: {type(exc).__name__}: {exc}"
                ) from exc
        return cls(built, owners)

    def __bool__(self) -> bool:
        return bool(self._guardrails)

    def guardrail(self, name: str) -> Guardrail:
        """The configured guardrail called ``name``; KeyError if there is none."""
        for configured, guardrail in self._guardrails:
            if configured == name:
                return guardrail
        raise KeyError(name)

    async def check_input(self, request: GuardrailInput) -> None:
        """Raise if any guardrail refuses the prompt, or fails to decide."""
        for name, guardrail in self._guardrails:
            try:
                verdict = await guardrail.check_input(request)
            except InferfluxError:
                raise
            except Exception as exc:
                raise self._unavailable(name, request.request_id, "request", exc) from None
            if not verdict.allowed:
                reason = f": {verdict.reason}" if verdict.reason else ""
                raise GuardrailError(f"the request was blocked by the {name!r} guardrail{reason}")

    def filters(self, request: GuardrailInput) -> FilterChain | None:
        """A fresh filter chain for one choice's output, or None if no guardrail filters."""
        filters = []
        for name, guardrail in self._guardrails:
            try:
                output_filter = guardrail.output_filter(request)
            except InferfluxError:
                raise
            except Exception as exc:
                raise self._unavailable(name, request.request_id, "output", exc) from None
            if output_filter is not None:
                filters.append((name, self._plugins.get(name, "?"), output_filter))
        return FilterChain(filters, request.request_id) if filters else None

    def _unavailable(
        self, name: str, request_id: str, what: str, exc: Exception
    ) -> GuardrailUnavailableError:
        return unavailable(name, self._plugins.get(name, "?"), request_id, what, exc)

    def logprobs_gate(self, request: GuardrailInput) -> LogprobsGate:
        """A gate for one choice's token logprobs, behind a filter chain of its own."""
        return LogprobsGate(self.filters(request) or FilterChain(()), lambda: self.filters(request))

    async def close(self) -> None:
        """Close every guardrail."""
        for name, guardrail in self._guardrails:
            try:
                await guardrail.close()
            except Exception as exc:
                log.warning("guardrail %s failed to close: %s", name, exc)


def unavailable(
    name: str, plugin: str, request_id: str, what: str, exc: Exception
) -> GuardrailUnavailableError:
    """Log a guardrail's failure naming it and its plugin; the error that refuses the request."""
    log.error(
        "guardrail %r (plugin %r) failed on %s: %s: %s",
        name,
        plugin,
        request_id,
        type(exc).__name__,
        exc,
        exc_info=exc,
    )
    return GuardrailUnavailableError(
        f"the guardrail {name!r} could not check the {what}, so it is refused"
    )


class _ChoiceFilters:
    """The filter chains of one choice: one for its text, one per tool call's arguments,
    and the gate of its token logprobs."""

    def __init__(self, chain: GuardrailChain, request: GuardrailInput, text: FilterChain) -> None:
        self._chain = chain
        self._request = request
        self.text = text
        self.calls: dict[int, FilterChain] = {}
        self._finished_calls: set[int] = set()
        self.logprobs = chain.logprobs_gate(request)

    def call(self, index: int) -> FilterChain:
        """The chain of tool call ``index``'s arguments."""
        if index not in self.calls:
            self.calls[index] = self._chain.filters(self._request) or FilterChain(())
        return self.calls[index]

    def text_delta(self, delta: TextDelta) -> TextDelta | None:
        """What of ``delta`` may be sent now (None: nothing yet); Blocked if it is blocked."""
        text, blocked = self.text.push(delta.text) if delta.text else ("", False)
        if blocked:
            raise _Blocked
        logprobs, blocked = self.logprobs.push(delta.logprobs, False)
        if blocked:
            raise _Blocked
        if not text and not logprobs:
            return None
        return TextDelta(delta.choice, text, logprobs, delta.echo)

    def call_delta(self, delta: ToolCallDelta) -> list[InferenceEvent]:
        """What of a tool call's delta may be sent now; Blocked if it is blocked.

        A new call completes the earlier ones: what their chains held back is released
        first, so each call's arguments are whole before the next call starts (APIs that
        stream calls as consecutive blocks, Anthropic's and the Responses API, need that).
        """
        out: list[InferenceEvent] = []
        if delta.id is not None:
            out.extend(self._finish_calls(delta.choice))
        arguments, blocked = self.call(delta.call).push(delta.arguments)
        if blocked:
            raise _Blocked
        if delta.id is not None or arguments:
            out.append(dataclasses.replace(delta, arguments=arguments))
        return out

    def _finish_calls(self, choice: int) -> list[InferenceEvent]:
        """Release what the chains of the calls so far hold back (each once)."""
        out: list[InferenceEvent] = []
        for index, chain in sorted(self.calls.items()):
            if index in self._finished_calls:
                continue
            self._finished_calls.add(index)
            arguments, blocked = chain.finish()
            if blocked:
                raise _Blocked
            if arguments:
                out.append(ToolCallDelta(choice, index, arguments=arguments))
        return out

    def finish(self, choice: int) -> list[InferenceEvent]:
        """The output ended: what every chain held back; Blocked if it is blocked."""
        rest, blocked = self.text.finish()
        if blocked:
            raise _Blocked
        out = self._finish_calls(choice)
        logprobs, blocked = self.logprobs.push((), True)
        if blocked:
            raise _Blocked
        if rest or logprobs:
            out.insert(0, TextDelta(choice, rest, logprobs))
        return out


class _Blocked(Exception):
    """A choice's output is blocked."""


async def filter_events(
    events: AsyncIterator[InferenceEvent], chain: GuardrailChain, request: GuardrailInput
) -> AsyncIterator[InferenceEvent]:
    """A request's events with every choice's text, tool-call arguments and token logprobs
    passed through the output filters, for any front door.

    A blocked choice ends the stream with its ``Finish(reason="content_filter")``; generation
    is cancelled. Usage reports pass unchanged.
    """
    filters: dict[int, _ChoiceFilters | None] = {}
    try:
        async for event in events:
            if isinstance(event, UsageReport):
                yield event
                continue
            index = event.choice
            if index not in filters:
                text = chain.filters(request)
                filters[index] = None if text is None else _ChoiceFilters(chain, request, text)
            choice_filters = filters[index]
            if choice_filters is None:
                yield event
                continue
            try:
                for allowed in _filtered(event, choice_filters):
                    yield allowed
            except _Blocked:
                yield Finish(index, CONTENT_FILTER)
                return
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()


def _filtered(event: InferenceEvent, filters: _ChoiceFilters) -> list[InferenceEvent]:
    if isinstance(event, TextDelta):
        delta = filters.text_delta(event)
        return [delta] if delta is not None else []
    if isinstance(event, ToolCallDelta):
        return filters.call_delta(event)
    assert isinstance(event, Finish)
    return [*filters.finish(event.choice), event]
