"""The configured guardrails, in order: prompts in, and output out (whole or streamed).

Every guardrail judges the prompt; the first refusal wins (400, ``content_blocked``). A
guardrail that fails — raises, or cannot reach its policy server — refuses the request too
(503, ``guardrail_unavailable``): guardrails fail closed. Output filters see each choice's text
as it streams, holding back what might still turn into a blocked phrase; a blocked stream ends
with a chunk whose ``finish_reason`` is ``content_filter``, then ``data: [DONE]``. Token
logprobs follow the text they belong to (``guardrail_logprobs``): nothing of a blocked output
reaches the client through them.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, TypeVar

from inferflux_core.config import GuardrailConfig
from inferflux_core.contracts import Guardrail, GuardrailInput, OutputFilter
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

CONTENT_FILTER = "content_filter"
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

    def filter_result(self, result: dict[str, Any], request: GuardrailInput) -> None:
        """Pass a complete (non-streamed) response's choices through the output filters.

        Each choice's text, and each of its tool calls' arguments, is replaced, in place, by
        what the filters let through (a filter may redact); if any is blocked, raise.
        """
        for choice in result.get("choices", ()):
            holder, field = _text_slot(choice)
            slots = [(holder, field)]
            slots += [(call["function"], "arguments") for call in holder.get("tool_calls") or ()]
            for slot, name in slots:
                chain = self.filters(request)
                if chain is None:
                    return
                if _filter_text(slot, name, chain, True):
                    raise GuardrailError("the response was blocked by a guardrail")
            if choice.get("logprobs"):
                gate = self.logprobs_gate(request)
                choice["logprobs"], blocked = gate.push(choice["logprobs"], True)
                if blocked:
                    raise GuardrailError("the response was blocked by a guardrail")

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
        self.logprobs = chain.logprobs_gate(request)

    def call(self, index: int) -> FilterChain:
        """The chain of tool call ``index``'s arguments."""
        if index not in self.calls:
            self.calls[index] = self._chain.filters(self._request) or FilterChain(())
        return self.calls[index]


async def filter_stream(
    chunks: AsyncIterator[dict[str, Any]], chain: GuardrailChain, request: GuardrailInput
) -> AsyncIterator[dict[str, Any]]:
    """Chat or completion chunks with every choice's text passed through its filter chain.

    A choice's text and each of its tool calls' ``arguments`` are filtered apart. A blocked
    choice ends the stream: its last chunk has no new text and no tool calls, and
    ``finish_reason: content_filter``; generation is cancelled.
    """
    filters: dict[int, _ChoiceFilters | None] = {}
    try:
        async for chunk in chunks:
            for choice in chunk.get("choices", ()):
                index = choice.get("index", 0)
                if index not in filters:
                    text = chain.filters(request)
                    filters[index] = None if text is None else _ChoiceFilters(chain, request, text)
                choice_filters = filters[index]
                if choice_filters is not None and _filter_choice(choice, choice_filters):
                    chunk["choices"] = [choice]
                    yield chunk
                    return
            yield chunk
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()


def _text_slot(choice: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Where a chat or completion choice, whole or streamed, keeps its text."""
    for holder in ("delta", "message"):
        inner = choice.get(holder)
        if isinstance(inner, dict):
            return inner, "content"
    return choice, "text"


def _filter_choice(choice: dict[str, Any], filters: _ChoiceFilters) -> bool:
    """Replace the choice's text and arguments with what may be sent; True if blocked."""
    holder, field = _text_slot(choice)
    finished = choice.get("finish_reason") is not None
    blocked = _filter_text(holder, field, filters.text, finished)
    for call in holder.get("tool_calls") or ():
        function = call.get("function") or {}
        if not blocked and "arguments" in function:
            blocked = _filter_text(function, "arguments", filters.call(call["index"]), False)
    if finished and not blocked:
        blocked = _release_arguments(holder, filters)
    if not blocked:
        logprobs, blocked = filters.logprobs.push(choice.get("logprobs"), finished)
        if logprobs is not None or "logprobs" in choice:
            choice["logprobs"] = logprobs
    if blocked:
        holder[field] = ""
        holder.pop("tool_calls", None)
        if "logprobs" in choice:
            choice["logprobs"] = None
        choice["finish_reason"] = CONTENT_FILTER
    return blocked


def _filter_text(holder: dict[str, Any], field: str, chain: FilterChain, finished: bool) -> bool:
    """Pass ``holder[field]`` through ``chain``; True if the output is blocked."""
    text, blocked = chain.push(holder.get(field) or "")
    if not blocked and finished:
        rest, blocked = chain.finish()
        text += rest
    if not blocked and (text or holder.get(field) is not None):
        holder[field] = text
    return blocked


def _release_arguments(holder: dict[str, Any], filters: _ChoiceFilters) -> bool:
    """The output ended: send what each tool call's chain held back; True if blocked."""
    for index, chain in sorted(filters.calls.items()):
        rest, blocked = chain.finish()
        if blocked:
            return True
        if rest:
            fragment = {"index": index, "function": {"arguments": rest}}
            holder.setdefault("tool_calls", []).append(fragment)
    return False
