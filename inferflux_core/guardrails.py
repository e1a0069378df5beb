"""The configured guardrails, in order: prompts in, and output out (whole or streamed).

Every guardrail judges the prompt; the first refusal wins (400, ``content_blocked``). A
guardrail that fails — raises, or cannot reach its policy server — refuses the request too
(503, ``guardrail_unavailable``): guardrails fail closed. Output filters see each choice's text
as it streams, holding back what might still turn into a blocked phrase; a blocked stream ends
with a chunk whose ``finish_reason`` is ``content_filter``, then ``data: [DONE]``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from inferflux_core.config import GuardrailConfig
from inferflux_core.contracts import Guardrail, GuardrailInput, OutputFilter
from inferflux_core.errors import (
    ConfigError,
    GuardrailError,
    GuardrailUnavailableError,
    InferfluxError,
)
from inferflux_core.plugins import PluginHost

log = logging.getLogger(__name__)

CONTENT_FILTER = "content_filter"


class FilterChain:
    """One choice's output through every guardrail's filter, in order."""

    def __init__(self, filters: Sequence[OutputFilter]) -> None:
        self._filters = filters

    def push(self, text: str) -> tuple[str, bool]:
        """Text safe to send now, and whether the output is blocked."""
        for output_filter in self._filters:
            if not text:
                break
            text, blocked = output_filter.push(text)
            if blocked:
                return "", True
        return text, False

    def finish(self) -> tuple[str, bool]:
        """The output ended: release what every filter held back (each checked by the next)."""
        text = ""
        for output_filter in self._filters:
            if text:
                text, blocked = output_filter.push(text)
                if blocked:
                    return "", True
            text += output_filter.flush()
        return text, False


class GuardrailChain:
    """The guardrails of one server, built from ``guardrails`` in the configuration."""

    def __init__(self, guardrails: Sequence[tuple[str, Guardrail]] = ()) -> None:
        self._guardrails = list(guardrails)

    @classmethod
    def from_config(cls, configs: Sequence[GuardrailConfig], plugins: PluginHost) -> GuardrailChain:
        """Construct each configured guardrail; a bad option stops startup naming it."""
        built = []
        for index, config in enumerate(configs):
            factory = plugins.get("guardrails", config.name)
            try:
                built.append((config.name, factory(**config.options)))
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"guardrails.{index} ({config.name}): {exc}") from None
        return cls(built)

    def __bool__(self) -> bool:
        return bool(self._guardrails)

    async def check_input(self, request: GuardrailInput) -> None:
        """Raise if any guardrail refuses the prompt, or fails to decide."""
        for name, guardrail in self._guardrails:
            try:
                verdict = await guardrail.check_input(request)
            except InferfluxError:
                raise
            except Exception as exc:
                log.error("guardrail %s failed on %s: %s", name, request.request_id, exc)
                raise GuardrailUnavailableError(
                    f"the guardrail {name!r} could not check the request, so it is refused"
                ) from None
            if not verdict.allowed:
                reason = f": {verdict.reason}" if verdict.reason else ""
                raise GuardrailError(f"the request was blocked by the {name!r} guardrail{reason}")

    def filters(self, request: GuardrailInput) -> FilterChain | None:
        """A fresh filter chain for one choice's output, or None if no guardrail filters."""
        filters = []
        for name, guardrail in self._guardrails:
            try:
                output_filter = guardrail.output_filter(request)
            except Exception as exc:
                log.error("guardrail %s failed on %s: %s", name, request.request_id, exc)
                raise GuardrailUnavailableError(
                    f"the guardrail {name!r} could not check the output, so it is refused"
                ) from None
            if output_filter is not None:
                filters.append(output_filter)
        return FilterChain(filters) if filters else None

    def check_output(self, texts: Sequence[str], request: GuardrailInput) -> None:
        """Raise if a complete (non-streamed) output is blocked."""
        for text in texts:
            chain = self.filters(request)
            if chain is None:
                return
            if chain.push(text)[1] or chain.finish()[1]:
                raise GuardrailError("the response was blocked by a guardrail")

    async def close(self) -> None:
        """Close every guardrail."""
        for name, guardrail in self._guardrails:
            try:
                await guardrail.close()
            except Exception as exc:
                log.warning("guardrail %s failed to close: %s", name, exc)


class _ChoiceFilters:
    """The filter chains of one choice: one for its text, one per tool call's arguments."""

    def __init__(self, chain: GuardrailChain, request: GuardrailInput, text: FilterChain) -> None:
        self._chain = chain
        self._request = request
        self.text = text
        self.calls: dict[int, FilterChain] = {}

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
                    filters[index] = text and _ChoiceFilters(chain, request, text)
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


def _filter_choice(choice: dict[str, Any], filters: _ChoiceFilters) -> bool:
    """Replace the choice's text and arguments with what may be sent; True if blocked."""
    holder, field = (choice["delta"], "content") if "delta" in choice else (choice, "text")
    finished = choice.get("finish_reason") is not None
    blocked = _filter_text(holder, field, filters.text, finished)
    for call in holder.get("tool_calls") or ():
        function = call.get("function") or {}
        if not blocked and "arguments" in function:
            blocked = _filter_text(function, "arguments", filters.call(call["index"]), False)
    if finished and not blocked:
        blocked = _release_arguments(holder, filters)
    if blocked:
        holder[field] = ""
        holder.pop("tool_calls", None)
        choice["finish_reason"] = CONTENT_FILTER
    return blocked


def _filter_text(holder: dict[str, Any], field: str, chain: FilterChain, finished: bool) -> bool:
    """Pass ``holder[field]`` through ``chain``; True if the output is blocked."""
    text, blocked = chain.push(holder.get(field) or "")
    if not blocked and finished:
        rest, blocked = chain.finish()
        text += rest
    if not blocked and (text or field in holder):
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
