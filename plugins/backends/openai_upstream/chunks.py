"""An upstream's streamed chunks (chat or completions) as typed inference events.

The upstream is untrusted input: every field is type-checked, choice indexes must lie below
the request's ``n``, and tool calls, their names and their arguments are bounded. Anything
else is a :class:`~inferflux_plugins.backends.openai_upstream.sse.MalformedStreamError`.
"""

from __future__ import annotations

import json
from typing import Any, cast, get_args

from inferflux_core.contracts import (
    Finish,
    InferenceEvent,
    TextDelta,
    TextLogprob,
    TokenAlternative,
    ToolCallDelta,
    UsageReport,
)
from inferflux_core.contracts.generation import FinishReason
from inferflux_core.errors import InferfluxError
from inferflux_plugins.backends.openai_upstream.sse import MalformedStreamError

#: Tool calls in one choice.
MAX_TOOL_CALLS = 128
#: Characters of a tool call's id or name.
MAX_TOOL_NAME_CHARS = 256
#: Characters of one tool call's arguments, all fragments together.
MAX_TOOL_ARGUMENT_CHARS = 1 << 20
#: Alternatives per token in ``top_logprobs``.
MAX_TOP_LOGPROBS = 64
_REASONS = set(get_args(FinishReason))
_ALIASES = {"function_call": "tool_calls", "eos": "stop", "abort": "cancelled"}


class ChunkDecoder:
    """Decodes one request's stream: call :meth:`decode` per event, :meth:`end` at the end."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.finished: set[int] = set()
        self.usage: UsageReport | None = None
        self.done = False
        self._calls: dict[int, dict[int, int]] = {}  # choice -> upstream index -> our call
        self._argument_chars: dict[tuple[int, int], int] = {}
        self._chunks = 0

    def decode(self, data: str) -> list[InferenceEvent]:
        """The events of one SSE event's ``data``; ``[DONE]`` ends the stream."""
        try:
            return self._decode(data)
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
            raise MalformedStreamError(f"an event does not fit the protocol ({exc})") from None

    def _decode(self, data: str) -> list[InferenceEvent]:
        if self.done:
            raise MalformedStreamError("the upstream sent data after [DONE]")
        if data.strip() == "[DONE]":
            self.done = True
            return []
        try:
            chunk = json.loads(data)
        except ValueError:
            raise MalformedStreamError("the upstream sent an event that is not JSON") from None
        if not isinstance(chunk, dict):
            raise MalformedStreamError("the upstream sent an event that is not a JSON object")
        if "error" in chunk:
            raise StreamedError(chunk["error"])
        events: list[InferenceEvent] = []
        for choice in _list(chunk.get("choices"), "choices"):
            events.extend(self._choice(choice))
        if chunk.get("usage") is not None:
            self.usage = _usage(chunk["usage"])
        self._chunks += 1
        return events

    def unfinished(self) -> list[int]:
        """The choices with no ``Finish`` yet."""
        return [choice for choice in range(self.n) if choice not in self.finished]

    def end(
        self, reason: FinishReason, error: InferfluxError | None = None
    ) -> list[InferenceEvent]:
        """A ``Finish`` with ``reason`` (and ``error``) for every unfinished choice, then the
        usage."""
        events: list[InferenceEvent] = [Finish(c, reason, error) for c in self.unfinished()]
        return [*events, self.final_usage()]

    def final_usage(self) -> UsageReport:
        """The upstream's usage; without one, each chunk it sent counts as one token."""
        return self.usage if self.usage is not None else UsageReport(0, self._chunks)

    def _choice(self, choice: Any) -> list[InferenceEvent]:
        if not isinstance(choice, dict):
            raise MalformedStreamError("a choice of the upstream's chunk is not an object")
        index = choice.get("index", 0)
        if not _is_int(index) or not 0 <= index < self.n:
            raise MalformedStreamError(f"the upstream sent choice index {index!r} (n={self.n})")
        if index in self.finished:
            raise MalformedStreamError(f"the upstream sent more of choice {index} after its end")
        events: list[InferenceEvent] = []
        delta = choice.get("delta")
        if delta is not None:  # chat
            delta = _dict(delta, "delta")
            text = _text(delta.get("content"))
            logprobs = _chat_logprobs(choice.get("logprobs"))
            if text or logprobs:
                events.append(TextDelta(index, text, logprobs))
            for call in _list(delta.get("tool_calls"), "tool_calls"):
                events.append(self._tool_call(index, call))
        else:  # completions
            text = _text(choice.get("text"))
            logprobs = _completion_logprobs(choice.get("logprobs"))
            if text or logprobs:
                events.append(TextDelta(index, text, logprobs))
        reason = choice.get("finish_reason")
        if reason is not None:
            self.finished.add(index)
            events.append(Finish(index, _reason(reason)))
        return events

    def _tool_call(self, choice: int, call: Any) -> ToolCallDelta:
        call = _dict(call, "tool call")
        calls = self._calls.setdefault(choice, {})
        upstream_index = call.get("index", len(calls))
        if not _is_int(upstream_index):
            raise MalformedStreamError("a tool call's index is not an integer")
        if upstream_index not in calls:
            if len(calls) >= MAX_TOOL_CALLS:
                raise MalformedStreamError(f"the upstream sent over {MAX_TOOL_CALLS} tool calls")
            calls[upstream_index] = len(calls)
        ours = calls[upstream_index]
        function = _dict(call.get("function") or {}, "function")
        call_id = _short(call.get("id"), "tool call id")
        name = _short(function.get("name"), "tool name")
        arguments = _text(function.get("arguments"))
        total = self._argument_chars.get((choice, ours), 0) + len(arguments)
        if total > MAX_TOOL_ARGUMENT_CHARS:
            raise MalformedStreamError(
                f"a tool call's arguments are longer than {MAX_TOOL_ARGUMENT_CHARS} characters"
            )
        self._argument_chars[choice, ours] = total
        return ToolCallDelta(choice, ours, call_id, name, arguments)


class StreamedError(Exception):
    """The upstream sent ``{"error": ...}`` in its stream (after it had started)."""

    def __init__(self, error: Any) -> None:
        message = error.get("message") if isinstance(error, dict) else error
        super().__init__(str(message)[:1000] if message else "the upstream failed mid-stream")


def _reason(reason: Any) -> FinishReason:
    if not isinstance(reason, str):
        raise MalformedStreamError("a finish_reason is not a string")
    reason = _ALIASES.get(reason, reason)
    return cast(FinishReason, reason) if reason in _REASONS else "stop"


def _usage(usage: Any) -> UsageReport:
    usage = _dict(usage, "usage")
    details = usage.get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens", 0) if isinstance(details, dict) else 0
    counts = (usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0), cached or 0)
    if not all(_is_int(c) and 0 <= c < 1 << 40 for c in counts):
        raise MalformedStreamError("the upstream's usage holds a count that is not a token count")
    return UsageReport(*counts)


def _chat_logprobs(logprobs: Any) -> tuple[TextLogprob, ...]:
    if logprobs is None:
        return ()
    entries = _list(_dict(logprobs, "logprobs").get("content"), "logprobs.content")
    return tuple(_chat_entry(_dict(e, "logprob")) for e in entries)


def _chat_entry(entry: dict[str, Any]) -> TextLogprob:
    text, raw, logprob = _token(entry)
    top = _list(entry.get("top_logprobs"), "top_logprobs")[:MAX_TOP_LOGPROBS]
    alternatives = tuple(TokenAlternative(*_token(_dict(t, "top_logprob"))) for t in top)
    return TextLogprob(text, raw, logprob, alternatives)


def _token(entry: dict[str, Any]) -> tuple[str, bytes, float]:
    text = _text(entry.get("token"))
    logprob = entry.get("logprob")
    if not isinstance(logprob, int | float) or isinstance(logprob, bool):
        raise MalformedStreamError("a logprob is not a number")
    raw = entry.get("bytes")
    if isinstance(raw, list) and all(isinstance(b, int) and 0 <= b < 256 for b in raw):
        return text, bytes(raw), float(logprob)
    return text, text.encode("utf-8"), float(logprob)


def _completion_logprobs(logprobs: Any) -> tuple[TextLogprob, ...]:
    if logprobs is None:
        return ()
    logprobs = _dict(logprobs, "logprobs")
    tokens = _list(logprobs.get("tokens"), "logprobs.tokens")
    values = _list(logprobs.get("token_logprobs"), "logprobs.token_logprobs")
    tops = _list(logprobs.get("top_logprobs"), "logprobs.top_logprobs")
    entries = []
    for i, token in enumerate(tokens):
        text = _text(token)
        value = values[i] if i < len(values) else None
        logprob = float(value) if isinstance(value, int | float) else 0.0
        top = tops[i] if i < len(tops) and isinstance(tops[i], dict) else {}
        alternatives = tuple(
            TokenAlternative(_text(t), _text(t).encode(), float(lp))
            for t, lp in list(top.items())[:MAX_TOP_LOGPROBS]
            if isinstance(lp, int | float)
        )
        entries.append(
            TextLogprob(text, text.encode("utf-8", "surrogatepass"), logprob, alternatives)
        )
    return tuple(entries)


def _dict(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedStreamError(f"the upstream's {what} is not a JSON object")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise MalformedStreamError(f"the upstream's {what} is not a list")
    return value


def _text(value: Any) -> str:
    """A string the upstream sent, lone surrogates (which JSON can escape) made U+FFFD."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise MalformedStreamError("the upstream sent text that is not a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _short(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_TOOL_NAME_CHARS:
        raise MalformedStreamError(f"the upstream's {what} is not a string of at most 256 chars")
    return value or None
