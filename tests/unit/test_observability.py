"""The pieces of tracing and JSON logs that need no server: W3C trace headers, what a backend
sends on, the JSON formatter, and when tracing is on."""

from __future__ import annotations

import contextvars
import io
import json
import logging
import subprocess
import sys
import textwrap
from datetime import datetime

import pytest

from inferflux_core import request_context
from inferflux_core.config import load_config
from inferflux_core.errors import ConfigError
from inferflux_core.logs import JsonFormatter, configure_logging
from inferflux_core.tracing import RequestTracer, tracing_wanted
from inferflux_core.tracing.setup import exporter_names
from inferflux_core.tracing.timing import RequestTiming, combined

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
VALID = f"00-{TRACE_ID}-{PARENT}-01"


@pytest.mark.parametrize(
    "header",
    [
        "",
        "garbage",
        f"00-{TRACE_ID}-{PARENT}",
        f"00-{'0' * 32}-{PARENT}-01",  # an all-zero trace id
        f"00-{TRACE_ID}-{'0' * 16}-01",  # an all-zero parent
        f"ff-{TRACE_ID}-{PARENT}-01",  # the forbidden version
        f"00-{TRACE_ID}-{PARENT}-01-extra",  # version 00 has exactly four fields
        f"00-{TRACE_ID}g-{PARENT}-01",
        VALID + "x" * 300,
    ],
)
def test_an_invalid_traceparent_is_ignored(header: str) -> None:
    assert request_context.parse_trace_headers(header, "a=b") is None


def test_a_valid_traceparent_is_taken_lower_cased_with_a_sane_tracestate() -> None:
    parsed = request_context.parse_trace_headers(VALID.upper(), " congo=t61rcWkgMzE ")
    assert parsed is not None
    assert (parsed.trace_id, parsed.parent_span_id) == (TRACE_ID, PARENT)
    assert parsed.as_dict() == {"traceparent": VALID, "tracestate": "congo=t61rcWkgMzE"}
    assert request_context.parse_trace_headers(f"01-{TRACE_ID}-{PARENT}-01-later", None)


@pytest.mark.parametrize("state", ["a=" + "b" * 600, "a=b\x00c", "a=\u00e9"])
def test_an_oversized_or_binary_tracestate_is_dropped_not_the_trace(state: str) -> None:
    parsed = request_context.parse_trace_headers(VALID, state)
    assert parsed is not None and parsed.tracestate is None


def test_without_tracing_a_backend_passes_the_callers_trace_context_on() -> None:
    def in_request() -> tuple[dict[str, str], dict[str, str]]:
        request_context.bind("req-1", VALID, "k=v")
        passed = request_context.outgoing_trace_headers()
        token = request_context.set_outgoing({"traceparent": f"00-{TRACE_ID}-{'1' * 16}-01"})
        own = request_context.outgoing_trace_headers()
        request_context.reset_outgoing(token)
        return passed, own

    passed, own = contextvars.Context().run(in_request)
    assert passed == {"traceparent": VALID, "tracestate": "k=v"}
    assert own == {"traceparent": f"00-{TRACE_ID}-{'1' * 16}-01"}
    assert request_context.outgoing_trace_headers() == {}  # outside the request: nothing
    assert request_context.request_id() is None


def test_a_json_line_has_the_fields_the_request_id_and_the_traceback() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.observability.json")
    logger.addHandler(handler)
    logger.propagate = False

    def in_request() -> None:
        request_context.bind("req-42", VALID, None)
        logger.warning("a %s line", "request's", extra={"model": "m"})
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("it failed")

    try:
        contextvars.Context().run(in_request)
        logger.warning("outside")
    finally:
        logger.removeHandler(handler)
    first, failed, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "a request's line" and first["level"] == "WARNING"
    assert first["logger"] == "tests.observability.json" and first["model"] == "m"
    assert (first["request_id"], first["trace_id"]) == ("req-42", TRACE_ID)
    assert datetime.fromisoformat(first["time"]).utcoffset() is not None
    assert first["time"].endswith("Z")
    assert "ValueError: boom" in failed["exc_info"] and failed["request_id"] == "req-42"
    assert "request_id" not in outside and "trace_id" not in outside


def test_json_logging_replaces_the_root_handlers_and_text_is_the_default() -> None:
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    stream = io.StringIO()
    try:
        configure_logging("json", "info", stream=stream)
        logging.getLogger("tests.observability.root").info("hello")
        logging.getLogger("tests.observability.root").debug("hidden")
    finally:
        root.handlers[:] = saved
        root.setLevel(level)
        logging.captureWarnings(False)
    assert [json.loads(line)["message"] for line in stream.getvalue().splitlines()] == ["hello"]
    assert load_config().logging.format == "text"
    with pytest.raises(ConfigError, match=r"logging\.format"):
        load_config(logging={"format": "yaml"})


def test_tracing_is_on_by_default_only_when_otel_says_where_to_export(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SDK_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    assert not tracing_wanted(None) and tracing_wanted(True) and not tracing_wanted(False)
    assert not RequestTracer.from_config(None).enabled
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    assert tracing_wanted(None) and exporter_names() == ["otlp_proto_http"]
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    assert exporter_names() == ["otlp_proto_grpc"]
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console,otlp")
    assert exporter_names() == ["console", "otlp_proto_grpc"]
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon")
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_PROTOCOL"):
        exporter_names()
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert not tracing_wanted(None)
    monkeypatch.delenv("OTEL_SDK_DISABLED")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert not tracing_wanted(None) and exporter_names() == []


def test_the_phases_of_several_sequences_combine_first_start_to_last_end() -> None:
    one = RequestTiming(1.0, 2.0, 3.0, 9.0)
    two = RequestTiming(1.5, 2.5, 2.8, 7.0)
    assert combined([one, two]) == RequestTiming(1.0, 2.0, 2.8, 9.0)
    assert combined([one, RequestTiming(1.2)]).finished == 0.0  # one never finished


def test_the_core_runs_without_opentelemetry_and_refuses_tracing_true_without_it() -> None:
    script = textwrap.dedent(
        """
        import sys
        sys.modules["opentelemetry"] = None  # as if the [otel] extra were not installed
        from inferflux_core.bootstrap import build_engine
        from inferflux_core.config import Settings
        from inferflux_core.errors import ConfigError
        engine = build_engine(Settings())
        assert not engine.tracer.enabled
        try:
            build_engine(Settings(tracing={"enabled": True}))
        except ConfigError as exc:
            print(exc.message)
        assert not any(m.startswith("opentelemetry.") for m in sys.modules)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'inferflux[otel]'" in done.stdout
