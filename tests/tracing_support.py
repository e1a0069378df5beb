"""The OpenTelemetry SDK's in-memory exporter on the process's tracer provider, for the
tracing tests (a process has one global provider: it is installed once and shared)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

_exporter: InMemorySpanExporter | None = None


def memory_exporter() -> InMemorySpanExporter:
    """The exporter every span of this process also goes to (installed on first call)."""
    global _exporter
    if _exporter is None:
        provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):
            provider = TracerProvider()
            trace.set_tracer_provider(provider)
        _exporter = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(_exporter))
    return _exporter


def wait_for_span(
    exporter: InMemorySpanExporter,
    matches: Callable[[ReadableSpan], bool],
    timeout: float = 10.0,
) -> ReadableSpan:
    """The first finished span that ``matches`` (request spans end just after the response)."""
    deadline = time.monotonic() + timeout
    while True:
        for span in exporter.get_finished_spans():
            if matches(span):
                return span
        if time.monotonic() > deadline:
            names = [s.name for s in exporter.get_finished_spans()]
            raise AssertionError(f"no matching span within {timeout} s; finished: {names}")
        time.sleep(0.02)


def children_of(exporter: InMemorySpanExporter, parent: ReadableSpan) -> dict[str, ReadableSpan]:
    """The finished spans whose parent is ``parent``, by name."""
    parent_id = parent.context.span_id
    found: Sequence[ReadableSpan] = exporter.get_finished_spans()
    return {s.name: s for s in found if s.parent is not None and s.parent.span_id == parent_id}
