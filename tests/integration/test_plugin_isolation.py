"""Plugins that break while serving: guardrails and policy stores fail closed (503, logged
with the plugin's name); ``on_request_finished`` sinks fail open (served, logged). The server's
model comes from a ``resolve_model_source`` plugin."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from inferflux_core.config import Settings
from inferflux_core.contracts import (
    ALLOW,
    Guardrail,
    GuardrailInput,
    GuardrailVerdict,
    OutputFilter,
    Policy,
    PolicyStore,
)
from inferflux_core.hookspecs import hookimpl
from inferflux_core.sources import find_default_model_path
from tests.conftest import MODEL_NAME, RunningServer, free_port, start_server

CHAT = "/v1/chat/completions"
EXPLODE = "please explode"
EXPLODE_OUTPUT = "explode the output"


class _ExplodingFilter(OutputFilter):
    """A test double whose output filter raises on the first text it sees."""

    def push(self, text: str) -> tuple[str, bool]:
        raise RuntimeError("output filter bug")

    def flush(self) -> str:
        return ""


class ExplodingGuardrail(Guardrail):
    """A test double: raises on prompts holding EXPLODE, breaks output for EXPLODE_OUTPUT."""

    async def check_input(self, request: GuardrailInput) -> GuardrailVerdict:
        if EXPLODE in request.text:
            raise RuntimeError("guardrail bug")
        return ALLOW

    def output_filter(self, request: GuardrailInput) -> OutputFilter | None:
        return _ExplodingFilter() if EXPLODE_OUTPUT in request.text else None


class FlakyStore(PolicyStore):
    """A test double policy store kept in memory that raises while ``broken`` is set."""

    persistent = False
    broken = threading.Event()

    def __init__(self, **options: Any) -> None:
        super().__init__()
        self._policy = Policy()
        self._lock = threading.Lock()

    def read(self) -> Policy:
        if self.broken.is_set():
            raise OSError("the policy database is unreachable")
        return self._policy

    def update(self, change: Callable[[Policy], Policy]) -> Policy:
        with self._lock:
            changed = change(self.read())
            self._policy = changed.model_copy(update={"version": self._policy.version + 1})
            return self._policy


class GuardPlugin:
    """Registers the exploding guardrail."""

    @hookimpl
    def register_guardrails(self) -> dict[str, type[Guardrail]]:
        return {"exploding": ExplodingGuardrail}


class StorePlugin:
    """Registers the flaky store."""

    @hookimpl
    def register_policy_stores(self) -> dict[str, type[PolicyStore]]:
        return {"flaky": FlakyStore}


class BrokenSink:
    """An ``on_request_finished`` sink that always raises."""

    @hookimpl
    def on_request_finished(self, record: dict[str, Any]) -> None:
        raise RuntimeError("metrics backend down")


class RecordingSink:
    """An ``on_request_finished`` sink that keeps every record."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    @hookimpl
    def on_request_finished(self, record: dict[str, Any]) -> None:
        self.records.append(record)


SINK = RecordingSink()
CATALOGUE_SOURCE = "catalogue:smollm2"


class Catalogue:
    """A ``resolve_model_source`` plugin serving ``catalogue:smollm2`` from the default model."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    @hookimpl
    def resolve_model_source(self, source: str) -> Path | None:
        self.asked.append(source)
        return find_default_model_path() if source == CATALOGUE_SOURCE else None


CATALOGUE = Catalogue()


@pytest.fixture(scope="module")
def fragile() -> Iterator[RunningServer]:
    """A real server with the exploding guardrail, the flaky store and both sinks."""
    settings = Settings.model_validate(
        {
            "server": {"port": free_port(), "log_level": "warning"},
            "models": [
                {
                    "name": MODEL_NAME,
                    "source": CATALOGUE_SOURCE,
                    "context_length": 512,
                    "max_sequences": 2,
                }
            ],
            "policy": {"store": "flaky"},
            "guardrails": [{"name": "exploding"}],
        }
    )
    plugins = [
        ("guard_plugin", GuardPlugin()),
        ("store_plugin", StorePlugin()),
        ("broken_sink", BrokenSink()),
        ("recording_sink", SINK),
        ("catalogue", CATALOGUE),
    ]
    running = start_server(settings, extra_plugins=plugins)
    yield running
    running.stop()


@pytest.fixture
def http(fragile: RunningServer) -> Iterator[httpx.Client]:
    """An authenticated client; checks no request was left holding a sequence."""
    with httpx.Client(base_url=fragile.base_url, headers=fragile.auth_headers, timeout=60) as c:
        yield c
    FlakyStore.broken.clear()
    assert fragile.wait_idle(), "a request was left holding a sequence"


def _chat(content: str, **extra: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": content}]
    return {"model": MODEL_NAME, "messages": messages, "max_tokens": 4, "temperature": 0, **extra}


def _error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert "Traceback" not in response.text
    error = response.json()["error"]
    assert error["code"] == code
    return str(error["message"])


def _logged(caplog: pytest.LogCaptureFixture, *parts: str) -> bool:
    return any(all(p in r.getMessage() for p in parts) for r in caplog.records)


def test_a_guardrail_that_raises_refuses_the_request_with_503(
    http: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    message = _error(http.post(CHAT, json=_chat(EXPLODE)), 503, "guardrail_unavailable")
    assert "'exploding'" in message
    assert _logged(caplog, "'exploding'", "'guard_plugin'", "guardrail bug")


def test_a_guardrail_output_filter_that_raises_refuses_the_response(
    http: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    _error(http.post(CHAT, json=_chat(EXPLODE_OUTPUT)), 503, "guardrail_unavailable")
    assert _logged(caplog, "'exploding'", "'guard_plugin'", "output filter bug")


def test_a_streamed_output_filter_that_raises_ends_the_stream_with_an_error(
    http: httpx.Client,
) -> None:
    with http.stream("POST", CHAT, json=_chat(EXPLODE_OUTPUT, stream=True)) as response:
        assert response.status_code == 200
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert '"guardrail_unavailable"' in events[-2]


def test_a_policy_store_that_raises_refuses_requests_with_503(
    http: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    FlakyStore.broken.set()
    for response in (http.post(CHAT, json=_chat("Hi")), http.get("/v1/models")):
        message = _error(response, 503, "policy_store_unavailable")
        assert "'flaky'" in message and "unreachable" not in message
    assert _logged(caplog, "'flaky'", "'store_plugin'", "unreachable")
    FlakyStore.broken.clear()
    assert http.get("/v1/models").status_code == 200


def test_a_failing_request_sink_does_not_affect_the_request(
    http: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    SINK.records.clear()
    response = http.post(CHAT, json=_chat("Say hello."))
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"]
    assert _logged(caplog, "'broken_sink'", "on_request_finished")
    [record] = [r for r in SINK.records if r["path"] == CHAT]
    assert record["status"] == 200 and record["model"] == MODEL_NAME
    assert record["completion_tokens"] == response.json()["usage"]["completion_tokens"]
    assert len(record["prompt_sha256"]) == 64 and "prompt" not in record


def test_a_request_sink_sees_a_stream_once_it_ends(http: httpx.Client) -> None:
    SINK.records.clear()
    with http.stream("POST", CHAT, json=_chat("Count to three.", stream=True)) as response:
        assert response.status_code == 200
        text = response.read().decode()
    assert text.rstrip().endswith("data: [DONE]")
    [record] = [r for r in SINK.records if r["path"] == CHAT]
    assert record["stream"] is True and record["completion_tokens"] > 0


def test_the_model_source_a_plugin_resolves_is_served(
    fragile: RunningServer, http: httpx.Client
) -> None:
    # Asked by the memory check before the load, and by the load itself: only for this source.
    assert CATALOGUE.asked and set(CATALOGUE.asked) == {CATALOGUE_SOURCE}
    assert fragile.engine.model(MODEL_NAME).config.source == CATALOGUE_SOURCE
    response = http.post(CHAT, json=_chat("Say hello."))
    assert response.status_code == 200, response.text
