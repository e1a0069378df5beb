"""A real ``inferflux serve`` with ``logging.format: json`` (the upstream), and an in-process
gateway with tracing on whose model is served by ``openai_upstream`` from it.

The upstream's log file is what an operator's log shipper reads: every line must be one JSON
object, the lines of one request must carry its id, and a request the gateway forwarded must
carry the gateway's trace id (the ``traceparent`` the gateway sent on), and the upstream's
own span, exported over OTLP to a loopback receiver, is a child of the gateway's.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from inferflux_core.config import ModelConfig, ServerConfig, Settings, TracingConfig
from tests.conftest import MODEL_NAME, RunningServer, free_port, start_server
from tests.otlp_receiver import OtlpReceiver
from tests.tracing_support import memory_exporter, wait_for_span
from tests.upstream_server import UpstreamServer, start_serve, stop_upstream

CHAT: dict[str, Any] = {
    "messages": [{"role": "user", "content": "Name three colours."}],
    "max_tokens": 8,
    "temperature": 0.0,
}
#: Printed on stderr on purpose (never through logging, so never in a log pipeline).
DEV_KEY_NOTICE = "inferflux: development API key"


@pytest.fixture(scope="module")
def collector() -> Iterator[OtlpReceiver]:
    """Where the upstream exports its spans (OTLP over HTTP)."""
    receiver = OtlpReceiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def upstream(
    tmp_path_factory: pytest.TempPathFactory, collector: OtlpReceiver
) -> Iterator[UpstreamServer]:
    """``inferflux serve`` with JSON logs at level info, the audit line on, and tracing on
    the default way: ``OTEL_EXPORTER_OTLP_ENDPOINT`` set, ``tracing.enabled`` not."""
    server = start_serve(
        tmp_path_factory.mktemp("json-upstream"),
        [{"name": MODEL_NAME, "context_length": 2048, "max_sequences": 4}],
        {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"},
        config={"logging": {"format": "json"}, "audit": {"enabled": True}},
        log_level="info",
    )
    try:
        yield server
    finally:
        stop_upstream(server)


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    """Every finished span of this process."""
    return memory_exporter()


@pytest.fixture(scope="module")
def gateway(upstream: UpstreamServer, spans: InMemorySpanExporter) -> Iterator[RunningServer]:
    """An in-process server, tracing on, whose model ``gateway`` is the upstream's."""
    options = {"base_url": upstream.api_url, "api_key": upstream.api_key}
    settings = Settings(
        server=ServerConfig(port=free_port(), log_level="warning"),
        models=[
            ModelConfig(
                name="gateway", source=MODEL_NAME, backend="openai_upstream", options=options
            )
        ],
        tracing=TracingConfig(enabled=True),
    )
    running = start_server(settings)
    yield running
    running.stop()


def log_lines(path: Path) -> list[str]:
    """The log file's lines, but the development-key notice."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip() and not line.startswith(DEV_KEY_NOTICE)]


def audit_or_own(logger: str) -> str:
    """``inferflux.audit`` for the audit loggers (one per audit log: ``inferflux.audit.N``)."""
    return "inferflux.audit" if logger.startswith("inferflux.audit") else logger


def wait_for_lines(
    path: Path, wanted: Callable[[dict[str, Any]], bool], timeout: float = 10.0
) -> list[dict[str, Any]]:
    """The JSON lines that satisfy ``wanted``, once there is one (lines are written as they
    happen, a little after the response)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [entry for entry in map(json.loads, log_lines(path)) if wanted(entry)]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_the_upstream_receives_the_gateways_trace_context(
    gateway: RunningServer,
    upstream: UpstreamServer,
    spans: InMemorySpanExporter,
    collector: OtlpReceiver,
) -> None:
    client = openai.OpenAI(
        base_url=gateway.api_url, api_key=gateway.api_key, max_retries=0, timeout=120
    )
    stream = client.chat.completions.create(model="gateway", stream=True, **CHAT)
    chunks = list(stream)
    assert chunks and chunks[0].id
    span = wait_for_span(
        spans, lambda s: (s.attributes or {}).get("gen_ai.request.id") == chunks[0].id
    )
    assert span.name == "chat gateway"
    assert span.parent is None  # the caller sent no traceparent: the gateway started the trace
    trace_id = format(span.context.trace_id, "032x")

    def forwarded(entry: dict[str, Any]) -> bool:
        return entry.get("logger") == "uvicorn.access" and entry.get("trace_id") == trace_id

    access = wait_for_lines(upstream.log_path, forwarded)
    assert len(access) == 1, access
    assert access[0]["path"] == "/v1/chat/completions" and access[0]["status"] == 200

    # The upstream traces too (exporting over OTLP): its request span is the gateway's child.
    theirs = collector.wait_for(lambda s: s.trace_id == trace_id and s.name.startswith("chat"))
    assert theirs.name == f"chat {MODEL_NAME}" and theirs.service == "inferflux"
    assert theirs.parent_span_id == format(span.context.span_id, "016x")
    phases = {s.name for s in collector.spans() if s.parent_span_id == theirs.span_id}
    assert phases == {"queue", "prefill", "decode"}


def test_every_line_of_the_json_log_is_an_object_and_a_requests_lines_carry_its_id(
    upstream: UpstreamServer,
) -> None:
    headers = {"Authorization": f"Bearer {upstream.api_key}"}
    own_id = f"obs-{secrets.token_hex(6)}"
    trace_id = secrets.token_hex(16)
    with httpx.Client(base_url=upstream.api_url, headers=headers, timeout=120) as http:
        named = http.post(
            "/chat/completions",
            json={"model": MODEL_NAME, "stream": True, **CHAT},
            headers={"X-Request-ID": own_id, "traceparent": f"00-{trace_id}-{'ab' * 8}-01"},
        )
        unnamed = http.post("/chat/completions", json={"model": MODEL_NAME, **CHAT})
        refused = http.post("/chat/completions", json={"model": "no-such-model", **CHAT})
    assert named.status_code == 200 and unnamed.status_code == 200
    assert refused.status_code == 404
    assert named.headers["x-request-id"] == own_id
    generated_id = unnamed.headers["x-request-id"]

    for request_id, status in (
        (own_id, 200),
        (generated_id, 200),
        (refused.headers["x-request-id"], 404),
    ):
        mine = wait_for_lines(
            upstream.log_path,
            lambda e, rid=request_id: (
                e.get("request_id") == rid and e["logger"].startswith("inferflux.audit")
            ),
        )
        lines = [
            e
            for e in map(json.loads, log_lines(upstream.log_path))
            if e.get("request_id") == request_id
        ]
        loggers = {audit_or_own(entry["logger"]) for entry in lines}
        assert mine and {"uvicorn.access", "inferflux.audit"} <= loggers, lines
        access = [entry for entry in lines if entry["logger"] == "uvicorn.access"]
        assert [entry["status"] for entry in access] == [status]
    traced = [json.loads(line) for line in log_lines(upstream.log_path)]
    assert {e["trace_id"] for e in traced if e.get("request_id") == own_id} == {trace_id}

    entries = [json.loads(line) for line in log_lines(upstream.log_path)]
    for entry in entries:
        assert isinstance(entry, dict)
        assert {"time", "level", "logger", "message"} <= entry.keys(), entry
        moment = datetime.fromisoformat(entry["time"])
        assert entry["time"].endswith("Z") and moment.utcoffset() is not None
    startup = [e for e in entries if e["logger"] == "inferflux" and "serving" in e["message"]]
    assert startup and all("request_id" not in e for e in startup)
