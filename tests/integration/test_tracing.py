"""Tracing against a real server: the openai SDK -> inferflux (tracing on) -> the real model.

Spans are read from the OpenTelemetry SDK's in-memory exporter on the process's tracer
provider (:mod:`tests.tracing_support`).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import openai
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from inferflux_core.config import ModelConfig, ServerConfig, Settings, TracingConfig
from tests.conftest import MODEL_NAME, RunningServer, free_port, start_server
from tests.tracing_support import children_of, memory_exporter, wait_for_span

MESSAGES = [{"role": "user", "content": "Name three colours."}]


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    """Every finished span of this process (installed before the server's engine exists)."""
    return memory_exporter()


@pytest.fixture(scope="module")
def traced_server(spans: InMemorySpanExporter) -> Iterator[RunningServer]:
    """The default model behind a real server with ``tracing.enabled: true``."""
    settings = Settings(
        server=ServerConfig(port=free_port(), log_level="warning"),
        models=[ModelConfig(name=MODEL_NAME, context_length=2048, max_sequences=4)],
        tracing=TracingConfig(enabled=True),
    )
    running = start_server(settings)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(traced_server: RunningServer) -> openai.OpenAI:
    """The openai SDK pointed at the traced server."""
    return openai.OpenAI(
        base_url=traced_server.api_url, api_key=traced_server.api_key, max_retries=0, timeout=120
    )


def caller_context() -> tuple[str, str, str]:
    """A fresh caller trace id, parent span id, and the ``traceparent`` carrying them."""
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, parent_id, f"00-{trace_id}-{parent_id}-01"


def request_span(spans: InMemorySpanExporter, request_id: str) -> ReadableSpan:
    """The request span of the response ``request_id``."""
    return wait_for_span(
        spans, lambda s: (s.attributes or {}).get("gen_ai.request.id") == request_id
    )


def test_a_streamed_chat_is_traced_under_the_callers_trace_with_queue_prefill_and_decode(
    client: openai.OpenAI, spans: InMemorySpanExporter
) -> None:
    trace_id, parent_id, traceparent = caller_context()
    stream = client.chat.completions.create(
        model=MODEL_NAME,
        messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=16,
        temperature=0.0,
        top_p=0.9,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"traceparent": traceparent, "tracestate": "congo=t61rcWkgMzE"},
    )
    chunks = list(stream)
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens > 0

    span = request_span(spans, chunks[0].id)
    assert span.name == f"chat {MODEL_NAME}"
    assert span.kind is SpanKind.SERVER
    assert format(span.context.trace_id, "032x") == trace_id
    assert span.parent is not None and format(span.parent.span_id, "016x") == parent_id
    assert span.context.trace_state.to_header() == "congo=t61rcWkgMzE"
    attributes = dict(span.attributes or {})
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.request.model"] == MODEL_NAME
    assert attributes["gen_ai.response.model"] == MODEL_NAME
    assert attributes["gen_ai.request.max_tokens"] == 16
    assert attributes["gen_ai.request.temperature"] == 0.0
    assert attributes["gen_ai.request.top_p"] == pytest.approx(0.9)
    assert attributes["gen_ai.usage.input_tokens"] == usage.prompt_tokens
    assert attributes["gen_ai.usage.output_tokens"] == usage.completion_tokens
    assert attributes["gen_ai.response.finish_reasons"] == (chunks[-2].choices[0].finish_reason,)
    ttft = attributes["gen_ai.latency.time_to_first_token"]
    e2e = attributes["gen_ai.latency.e2e"]
    assert isinstance(ttft, float) and isinstance(e2e, float)
    assert 0 < ttft <= e2e
    for name in ("time_in_queue", "time_in_model_prefill", "time_in_model_decode"):
        assert 0 <= attributes[f"gen_ai.latency.{name}"] <= e2e  # type: ignore[operator]

    phases = children_of(spans, span)
    assert set(phases) == {"queue", "prefill", "decode"}
    queue, prefill, decode = phases["queue"], phases["prefill"], phases["decode"]
    for phase in (queue, prefill, decode):
        assert phase.context.trace_id == span.context.trace_id
        assert phase.start_time is not None and phase.end_time is not None
        assert span.start_time is not None and span.end_time is not None
        assert span.start_time <= phase.start_time <= phase.end_time <= span.end_time
    assert queue.end_time == prefill.start_time and prefill.end_time == decode.start_time


def test_a_request_without_a_valid_traceparent_starts_a_new_trace(
    client: openai.OpenAI, spans: InMemorySpanExporter
) -> None:
    plain = client.chat.completions.create(
        model=MODEL_NAME,
        messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=4,
    )
    malformed = client.chat.completions.create(
        model=MODEL_NAME,
        messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=4,
        extra_headers={"traceparent": "00-" + "0" * 32 + "-00f067aa0ba902b7-01"},
    )
    first, second = request_span(spans, plain.id), request_span(spans, malformed.id)
    assert first.parent is None and second.parent is None
    assert first.context.trace_id != second.context.trace_id
    assert first.context.trace_id != 0 and second.context.trace_id != 0


def test_a_refused_request_ends_its_span_with_the_error(
    client: openai.OpenAI, spans: InMemorySpanExporter
) -> None:
    trace_id, _, traceparent = caller_context()
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model=MODEL_NAME,
            messages=[{"role": "user", "content": "word " * 3000}],
            max_tokens=4,
            extra_headers={"traceparent": traceparent},
        )
    span = wait_for_span(spans, lambda s: format(s.context.trace_id, "032x") == trace_id)
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {}).get("error.type") == "context_length_exceeded"


def test_a_client_that_leaves_mid_stream_still_ends_the_span(
    client: openai.OpenAI, spans: InMemorySpanExporter, traced_server: RunningServer
) -> None:
    trace_id, _, traceparent = caller_context()
    stream = client.chat.completions.create(
        model=MODEL_NAME,
        messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=400,
        stream=True,
        extra_headers={"traceparent": traceparent},
    )
    for index, _ in enumerate(stream):
        if index == 3:
            break
    stream.close()
    span = wait_for_span(
        spans,
        lambda s: format(s.context.trace_id, "032x") == trace_id and s.name.startswith("chat"),
    )
    assert "decode" in children_of(spans, span)
    assert traced_server.wait_idle()
