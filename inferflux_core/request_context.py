"""What a request carries through the code it runs, without being passed along: its HTTP
request id (for log lines) and its W3C trace context (for spans and for upstream backends).

The HTTP layer binds both when a request arrives (:func:`bind`); they are context variables,
so every coroutine and task of that request sees them, and nothing else does. The step
thread is not one of them: it works for every request of a step at once.

A backend that calls another service sends :func:`outgoing_trace_headers` with its request:
the ``traceparent`` of inferflux's request span when tracing is on, otherwise the caller's
own ``traceparent`` / ``tracestate`` passed through unchanged (W3C Trace Context).
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "TraceHeaders",
    "bind",
    "current_trace_id",
    "incoming_trace",
    "outgoing_trace_headers",
    "parse_trace_headers",
    "request_id",
    "reset_outgoing",
    "set_outgoing",
]

# version 00 (and any later one but ff), 32 hex trace id, 16 hex parent id, 2 hex flags; a
# later version may append fields after a dash.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
#: W3C: a tracestate of at most 512 characters must be propagated; we take no more.
MAX_TRACESTATE = 512
_TRACESTATE_CHARS = re.compile(r"[\x20-\x7e]*")


@dataclass(frozen=True, slots=True)
class TraceHeaders:
    """A valid W3C ``traceparent`` (lower-case) and its ``tracestate``, if one came along."""

    traceparent: str
    tracestate: str | None = None

    @property
    def trace_id(self) -> str:
        """The 32 hex digits of the trace id."""
        return self.traceparent[3:35]

    @property
    def parent_span_id(self) -> str:
        """The 16 hex digits of the caller's span id."""
        return self.traceparent[36:52]

    def as_dict(self) -> dict[str, str]:
        """The headers to send on."""
        headers = {"traceparent": self.traceparent}
        if self.tracestate:
            headers["tracestate"] = self.tracestate
        return headers


def parse_trace_headers(traceparent: str | None, tracestate: str | None) -> TraceHeaders | None:
    """The trace context of a request's headers; None unless ``traceparent`` is valid (a bad
    one is ignored, as W3C asks: the request starts a new trace). A ``tracestate`` longer
    than :data:`MAX_TRACESTATE` or with characters outside printable ASCII is dropped."""
    if traceparent is None or len(traceparent) > 256:
        return None
    value = traceparent.strip().lower()
    match = _TRACEPARENT.fullmatch(value)
    if match is None:
        return None
    version, trace_id, span_id, _, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or set(trace_id) == {"0"}:
        return None
    if set(span_id) == {"0"}:
        return None
    state = tracestate.strip() if tracestate is not None else None
    if state is not None and (
        len(state) > MAX_TRACESTATE or not _TRACESTATE_CHARS.fullmatch(state)
    ):
        state = None
    return TraceHeaders(value, state or None)


_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "inferflux_request_id", default=None
)
_incoming: contextvars.ContextVar[TraceHeaders | None] = contextvars.ContextVar(
    "inferflux_incoming_trace", default=None
)
_outgoing: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "inferflux_outgoing_trace", default=None
)


def bind(
    request_id: str | None, traceparent: str | None = None, tracestate: str | None = None
) -> TraceHeaders | None:
    """Bind a request's id and trace context to the current context (the HTTP layer calls
    this once per request, in the request's task); the parsed trace context, if valid."""
    trace = parse_trace_headers(traceparent, tracestate)
    _request_id.set(request_id)
    _incoming.set(trace)
    _outgoing.set(None)
    return trace


def request_id() -> str | None:
    """The HTTP request id of the request this code runs for (None outside a request)."""
    return _request_id.get()


def incoming_trace() -> TraceHeaders | None:
    """The caller's valid trace context, if it sent one."""
    return _incoming.get()


def set_outgoing(headers: Mapping[str, str] | None) -> contextvars.Token[Mapping[str, str] | None]:
    """Make ``headers`` what :func:`outgoing_trace_headers` gives (the tracer sets its request
    span's context); reset with the returned token."""
    return _outgoing.set(headers)


def reset_outgoing(token: contextvars.Token[Mapping[str, str] | None]) -> None:
    """Undo a :func:`set_outgoing`."""
    _outgoing.reset(token)


def outgoing_trace_headers() -> dict[str, str]:
    """The W3C trace headers a backend sends with the request it makes for the current one:
    inferflux's request span when tracing is on, else the caller's, else none."""
    outgoing = _outgoing.get()
    if outgoing is not None:
        return dict(outgoing)
    incoming = _incoming.get()
    return incoming.as_dict() if incoming is not None else {}


def current_trace_id() -> str | None:
    """The trace id of the current request's outgoing context, else of the caller's (for log
    lines)."""
    outgoing = _outgoing.get()
    if outgoing is not None:
        parsed = parse_trace_headers(outgoing.get("traceparent"), None)
        if parsed is not None:
            return parsed.trace_id
    incoming = _incoming.get()
    return incoming.trace_id if incoming is not None else None
