"""One span per generation request, with ``queue``, ``prefill`` and ``decode`` children.

The request span starts when the engine takes the request and ends when its events end
(finished, failed, or closed early by a client that left). Its parent is the caller's W3C
trace context (:func:`inferflux_core.request_context.incoming_trace`), else the current
OpenTelemetry context of an embedding program. The children are made after the fact from
the moments the step thread recorded anyway (:class:`~inferflux_core.tracing.timing.
RequestTiming`), with explicit start and end times: tracing adds no work per token on the
step thread, and one check per event on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from inferflux_core import request_context
from inferflux_core.contracts.generation import (
    Finish,
    InferenceEvent,
    InferenceRequest,
    TextDelta,
    UsageReport,
)
from inferflux_core.errors import InferfluxError
from inferflux_core.tracing import attributes
from inferflux_core.tracing.setup import ensure_provider, tracing_wanted
from inferflux_core.tracing.timing import EpochClock, RequestTiming, combined

#: The request's timings, read once its events end (the step runner's streams give them).
TimingSource = Callable[[], Sequence[RequestTiming]]
INSTRUMENTATION_NAME = "inferflux"


class RequestTracer:
    """Starts a :class:`RequestTrace` per request, or none when tracing is off."""

    def __init__(self, tracer: Any | None = None) -> None:
        """``tracer``: an OpenTelemetry ``Tracer``; None traces nothing."""
        self._tracer = tracer

    @classmethod
    def from_config(cls, enabled: bool | None) -> RequestTracer:
        """The tracer ``tracing.enabled`` asks for (see :func:`tracing_wanted`), on the global
        tracer provider (installed from ``OTEL_*`` if the program has none)."""
        if not tracing_wanted(enabled):
            return cls()
        from opentelemetry import trace

        ensure_provider()
        return cls(trace.get_tracer(INSTRUMENTATION_NAME))

    @property
    def enabled(self) -> bool:
        """True when requests get spans."""
        return self._tracer is not None

    def start(self, request: InferenceRequest) -> RequestTrace | None:
        """Start ``request``'s span (None when tracing is off)."""
        if self._tracer is None:
            return None
        return RequestTrace(self._tracer, request)


class RequestTrace:
    """The span of one request, from the engine taking it to its last event."""

    def __init__(self, tracer: Any, request: InferenceRequest) -> None:
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._tracer = tracer
        self.request = request
        self.started = time.monotonic()
        propagator = TraceContextTextMapPropagator()
        incoming = request_context.incoming_trace()
        parent = propagator.extract(incoming.as_dict()) if incoming is not None else None
        self.span = tracer.start_span(
            attributes.span_name(request),
            context=parent,
            kind=trace.SpanKind.SERVER,
            attributes=attributes.request_attributes(request),
        )
        self._context = trace.set_span_in_context(self.span)
        carrier: dict[str, str] = {}
        propagator.inject(carrier, context=self._context)
        #: The trace headers a backend sends upstream for this request (its span's context).
        self.headers = carrier
        self._ended = False

    @contextlib.contextmanager
    def opening(self) -> Iterator[None]:
        """Around the request's submission: backends see :attr:`headers` as the outgoing
        trace context; a refusal ends the span with the error."""
        token = request_context.set_outgoing(self.headers)
        try:
            yield
        except BaseException as exc:
            cancelled = isinstance(exc, asyncio.CancelledError)  # the client left: no error
            self.end(RequestTiming(), None, (), None if cancelled else exc)
            raise
        finally:
            request_context.reset_outgoing(token)

    def follow(self, events: AsyncIterator[InferenceEvent], timings: TimingSource) -> TracedEvents:
        """``events``, watched: the span ends when they do."""
        return TracedEvents(events, self, timings)

    def end(
        self,
        timing: RequestTiming,
        usage: UsageReport | None,
        finish_reasons: Sequence[str],
        error: BaseException | None = None,
    ) -> None:
        """Set the response attributes, add the phase spans, and end the span (once)."""
        if self._ended:
            return
        self._ended = True
        from opentelemetry.trace import Status, StatusCode

        span = self.span
        ended = time.monotonic()
        span.set_attributes(attributes.response_attributes(self.request, usage, finish_reasons))
        span.set_attributes(attributes.latency_attributes(timing, self.started, ended))
        if error is not None:
            kind = error.code if isinstance(error, InferfluxError) else type(error).__name__
            span.set_attribute(attributes.ERROR_TYPE, str(kind or type(error).__name__))
            span.set_status(Status(StatusCode.ERROR, str(error)[:200]))
        self._phase_spans(timing, ended)
        span.end()

    def _phase_spans(self, timing: RequestTiming, ended: float) -> None:
        """``queue`` (waiting for a KV sequence), ``prefill`` (to the first token) and
        ``decode`` (to the end), for each phase the request reached."""
        clock = EpochClock()
        end = timing.finished or ended
        phases = (
            ("queue", timing.submitted, timing.scheduled or end),
            ("prefill", timing.scheduled, timing.first_token or end),
            ("decode", timing.first_token, end),
        )
        for name, start, stop in phases:
            if start <= 0.0:
                continue
            child = self._tracer.start_span(name, context=self._context, start_time=clock.ns(start))
            child.end(end_time=clock.ns(max(start, stop)))


class TracedEvents:
    """A request's events, passed on unchanged; the usage, the finish reasons and the end are
    noted for its :class:`RequestTrace`. Keeps the wrapped iterator's ``first``."""

    def __init__(
        self, events: AsyncIterator[InferenceEvent], trace: RequestTrace, timings: TimingSource
    ) -> None:
        self._events = events
        self._trace = trace
        self._timings = timings
        self._usage: UsageReport | None = None
        self._reasons: list[str] = []
        self._error: BaseException | None = None
        self._first_token = 0.0
        self.first = getattr(events, "first", None)
        self._calls_out = not timings()

    def __aiter__(self) -> TracedEvents:
        return self

    async def __anext__(self) -> InferenceEvent:
        # Only a request-level backend (no step timings) may call out while it streams.
        token = request_context.set_outgoing(self._trace.headers) if self._calls_out else None
        try:
            event = await anext(self._events)
        except (StopAsyncIteration, asyncio.CancelledError):  # the end, or the client left
            self._end()
            raise
        except BaseException as exc:
            self._end(exc)
            raise
        finally:
            if token is not None:
                request_context.reset_outgoing(token)
        if isinstance(event, UsageReport):
            self._usage = event
        elif isinstance(event, TextDelta):
            if not self._first_token and not event.echo:
                self._first_token = time.monotonic()
        elif isinstance(event, Finish):
            self._reasons.append(event.reason)
            if event.error is not None and self._error is None:
                self._error = event.error
        return event

    async def aclose(self) -> None:
        """Close the wrapped events (cancelling the request if it runs), then end the span."""
        try:
            aclose = getattr(self._events, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            self._end()

    def _end(self, error: BaseException | None = None) -> None:
        timings = self._timings()
        timing = combined(timings) if timings else RequestTiming(first_token=self._first_token)
        self._trace.end(timing, self._usage, self._reasons, error or self._error)
