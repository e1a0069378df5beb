"""A scheduler or backend that raises fails the requests it concerns with a 503 and the step
loop goes on; a broken model is marked failed, ``/readyz`` says so and its requests get a 503
at once. The doubles are the real scheduler and backend with switches: see
``tests/supervision_doubles.py``."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from inferflux_core.config import Settings
from inferflux_core.engine.requests import GenerationRequest
from inferflux_core.engine.runner import ModelRunner
from inferflux_core.engine.supervision import MAX_FAILED_STEPS
from inferflux_core.errors import BackendError, FatalBackendError, InferfluxError
from tests import supervision_doubles
from tests.conftest import MODEL_NAME, RunningServer, free_port, start_server
from tests.integration.test_disconnect import post_and_hang_up
from tests.supervision_doubles import (
    FAIL_ADD,
    FAIL_PLAN,
    FailingBackend,
    FailingScheduler,
    StepThreadKiller,
)

DOUBLES = [("supervision_doubles", supervision_doubles)]
HELLO = [{"role": "user", "content": "Say hello."}]


def _settings(port: int, models: list[dict[str, Any]], **extra: Any) -> Settings:
    return Settings.model_validate(
        {"server": {"port": port, "log_level": "warning"}, "models": models, **extra}
    )


@pytest.fixture(scope="module")
def failing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server whose scheduler and backend fail when a test says, with the audit log on."""
    audit = tmp_path_factory.mktemp("supervision") / "audit.log"
    model = {
        "name": MODEL_NAME,
        "backend": "failing_llama_cpp",
        "context_length": 1024,
        "max_sequences": 4,
    }
    settings = _settings(
        free_port(),
        [model],
        scheduler={"name": "failing_continuous"},
        audit={"enabled": True, "path": str(audit)},
    )
    running = start_server(settings, extra_plugins=DOUBLES)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def broken() -> Iterator[RunningServer]:
    """A server with one model per way of breaking, each with one sequence, and a healthy one."""
    models = [
        {"name": name, "backend": "failing_llama_cpp", "context_length": 512, "max_sequences": 1}
        for name in ("fatal", "repeated", "dies", "healthy")
    ]
    running = start_server(_settings(free_port(), models), extra_plugins=DOUBLES)
    yield running
    running.stop()


def _client(server: RunningServer) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, headers=server.auth_headers, timeout=60)


def _chat(client: httpx.Client, model: str = MODEL_NAME, **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": HELLO, "max_tokens": 4, **extra}
    return client.post("/v1/chat/completions", json=body)


def _error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code and error["type"] == "server_error", error
    assert set(error) == {"message", "type", "param", "code"}
    return error


def _runner(server: RunningServer, model: str = MODEL_NAME) -> ModelRunner:
    return server.engine.model(model).runner


def _backend(server: RunningServer, model: str = MODEL_NAME) -> FailingBackend:
    backend = server.engine.model(model).backend
    assert isinstance(backend, FailingBackend)
    return backend


def _assert_serves(server: RunningServer, model: str = MODEL_NAME) -> None:
    with _client(server) as client:
        response = _chat(client, model)
        assert response.status_code == 200, response.text
        assert response.json()["usage"]["completion_tokens"] >= 1
        assert client.get("/healthz").status_code == 200
    assert server.wait_idle()


def _wait_for(condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _failed_entry(server: RunningServer, model: str) -> dict[str, Any]:
    ready = httpx.get(f"{server.base_url}/readyz")
    assert ready.status_code == 503
    body = ready.json()
    assert body["status"] == "failed"
    entries = {entry["model"]: entry for entry in body["failed"]}
    assert model in entries and "healthy" not in entries
    entry: dict[str, Any] = entries[model]
    return entry


class LongStream:
    """A streamed chat request read on a thread; holds a sequence until it ends."""

    def __init__(self, server: RunningServer, model: str = MODEL_NAME, max_tokens: int = 200):
        self.lines: list[str] = []
        self.started = threading.Event()
        body = {
            "model": model,
            "messages": [{"role": "user", "content": "Tell me a long story."}],
            "max_tokens": max_tokens,
            "ignore_eos": True,
            "stream": True,
        }
        self._thread = threading.Thread(target=self._read, args=(server, body), daemon=True)
        self._thread.start()
        assert self.started.wait(60), "the stream did not start"

    def _read(self, server: RunningServer, body: dict[str, Any]) -> None:
        with (
            _client(server) as client,
            client.stream("POST", "/v1/chat/completions", json=body) as r,
        ):
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    self.lines.append(line)
                    self.started.set()

    def chunks(self) -> list[dict[str, Any]]:
        """Every JSON chunk, once the stream ended."""
        self._thread.join(60)
        assert not self._thread.is_alive()
        return [json.loads(line.removeprefix("data: ")) for line in self.lines]


# -- a transient failure fails what it concerns; the loop goes on ---------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_a_scheduler_that_raises_in_add_refuses_that_request_and_keeps_nothing(
    failing: RunningServer, stream: bool
) -> None:
    scheduler = _runner(failing).scheduler
    assert isinstance(scheduler, FailingScheduler)
    with _client(failing) as client:
        response = _chat(client, stop=[FAIL_ADD], stream=stream)
    error = _error(response, 503, "scheduler_error")
    assert "RuntimeError" in error["message"] and response.headers["Retry-After"]
    runner = _runner(failing)
    assert (runner.live_requests, scheduler.waiting_count, scheduler.running_count) == (0, 0, 0)
    _assert_serves(failing)


def test_a_failed_plan_fails_the_new_request_and_the_running_one_finishes(
    failing: RunningServer,
) -> None:
    innocent = LongStream(failing, max_tokens=48)
    with _client(failing) as client:
        poisoned = _chat(client, stop=[FAIL_PLAN])
    error = _error(poisoned, 503, "scheduler_error")
    assert "OverflowError" in error["message"]
    chunks = innocent.chunks()
    assert not [c for c in chunks if "error" in c]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert httpx.get(f"{failing.base_url}/readyz").status_code == 200
    _assert_serves(failing)


@pytest.mark.parametrize(
    "failure",
    [RuntimeError("test double: decode broke"), BackendError("llama_decode returned -3")],
    ids=["a-bug", "a-backend-error"],
)
def test_a_backend_that_fails_a_step_fails_its_request_with_a_503_and_the_loop_goes_on(
    failing: RunningServer, failure: Exception
) -> None:
    _backend(failing).decode_failures.append(failure)
    with _client(failing) as client:
        response = _chat(client)
    error = _error(response, 503, "backend_error")
    expected = failure.message if isinstance(failure, InferfluxError) else "RuntimeError"
    assert expected in error["message"]
    assert failing.wait_idle()
    assert httpx.get(f"{failing.base_url}/readyz").status_code == 200
    _assert_serves(failing)


def test_a_sequence_whose_grammar_fails_mid_answer_fails_alone(failing: RunningServer) -> None:
    """The llguidance matcher of one sequence cannot go on: its request gets a 400, the
    request decoded in the same steps finishes untouched, and the model does not count it
    as a failure, however often it happens."""
    innocent = LongStream(failing, max_tokens=48)
    backend = _backend(failing)
    with _client(failing) as client:
        for _ in range(MAX_FAILED_STEPS + 1):
            backend.guided.armed = 1
            response = _chat(client, response_format={"type": "json_object"})
            assert response.status_code == 400, response.text
            error = response.json()["error"]
            assert (error["type"], error["code"]) == ("invalid_request_error", "generation_failed")
            assert "matcher cannot go on" in error["message"]
    chunks = innocent.chunks()
    assert not [c for c in chunks if "error" in c]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert failing.wait_idle()
    assert httpx.get(f"{failing.base_url}/readyz").status_code == 200
    _assert_serves(failing)


def test_a_stream_whose_step_fails_ends_with_an_error_event(failing: RunningServer) -> None:
    stream = LongStream(failing, max_tokens=400)
    _backend(failing).decode_failures.append(RuntimeError("test double: decode broke"))
    chunks = stream.chunks()
    assert chunks[-1]["error"]["code"] == "backend_error"
    assert failing.wait_idle()
    _assert_serves(failing)


def test_a_hung_up_request_is_audited_as_client_disconnected(failing: RunningServer) -> None:
    runner = _runner(failing)
    body = {"model": MODEL_NAME, "messages": HELLO, "max_tokens": 900, "ignore_eos": True}
    post_and_hang_up(
        failing,
        "/v1/chat/completions",
        body,
        lambda: runner.active_sequences == 1,
        request_id="hung-up-audited",
    )
    assert failing.wait_idle(timeout=2)
    audit = failing.engine.settings.audit.path
    assert audit is not None

    def line() -> dict[str, Any] | None:
        for raw in Path(audit).read_text().splitlines():
            record: dict[str, Any] = json.loads(raw)
            if record["request_id"] == "hung-up-audited":
                return record
        return None

    _wait_for(lambda: line() is not None, timeout=10)
    record = line()
    assert record is not None
    assert (record["status"], record["code"]) == (499, "client_disconnected")
    _assert_serves(failing)


# -- a priority the real scheduler cannot rank ---------------------------------------------


def test_the_real_step_loop_survives_a_priority_its_scheduler_cannot_rank(
    server: RunningServer,
) -> None:
    """``2**1024`` overflows the continuous scheduler's float ranking: only that request fails
    (whatever bound the HTTP layer puts on ``priority``)."""
    model = server.engine.model(MODEL_NAME)

    async def submit() -> list[Any]:
        tokens = model.tokenize_prompt("Hello")
        request = GenerationRequest(tokens, max_tokens=4, priority=2**1024)
        return [event async for event in model.runner.submit(request)]

    events = asyncio.run(submit())
    assert events[-1].finish_reason == "error"
    error = events[-1].error
    assert isinstance(error, InferfluxError) and (error.status, error.code) == (
        503,
        "scheduler_error",
    )
    assert server.wait_idle()
    with _client(server) as client:
        raw = json.dumps({"model": MODEL_NAME, "messages": HELLO, "max_tokens": 4})
        huge = raw.replace('"max_tokens"', f'"priority": {2**1024}, "max_tokens"')
        response = client.post(
            "/v1/chat/completions", content=huge, headers={"Content-Type": "application/json"}
        )
        error = response.json()["error"]
        if response.status_code == 400:  # the request model bounds priority
            assert "priority" in f"{error['param']} {error['message']}"
        else:
            assert (response.status_code, error["code"]) == (503, "scheduler_error")
        assert client.get("/readyz").status_code == 200
    assert server.wait_idle()
    _assert_serves(server)


# -- a broken model is marked failed --------------------------------------------------------


def test_a_fatal_backend_error_marks_the_model_failed(broken: RunningServer) -> None:
    runner = _runner(broken, "fatal")
    stream = LongStream(broken, "fatal", max_tokens=400)
    with (
        concurrent.futures.ThreadPoolExecutor(1) as pool,
        _client(broken) as client,
    ):
        waiting = pool.submit(_chat, client, "fatal")
        _wait_for(lambda: runner.live_requests == 2)
        _backend(broken, "fatal").decode_failures.append(FatalBackendError("the GPU fell off"))
        assert stream.chunks()[-1]["error"]["code"] == "backend_error"
        _error(waiting.result(60), 503, "model_failed")

        started = time.monotonic()
        refused = _chat(client, "fatal")
        assert time.monotonic() - started < 2
        error = _error(refused, 503, "model_failed")
        assert "fatal" in error["message"] and "the GPU fell off" in error["message"]
        embedding = client.post("/v1/embeddings", json={"model": "fatal", "input": "x"})
        _error(embedding, 503, "model_failed")

    entry = _failed_entry(broken, "fatal")
    assert "cannot go on" in entry["reason"] and "the GPU fell off" in entry["reason"]
    assert (runner.live_requests, runner.active_sequences) == (0, 0)
    _assert_serves(broken, "healthy")


def test_repeated_failed_steps_mark_the_model_failed(broken: RunningServer) -> None:
    runner = _runner(broken, "repeated")
    backend = _backend(broken, "repeated")
    stream = LongStream(broken, "repeated", max_tokens=400)
    queued = MAX_FAILED_STEPS + 1
    with (
        concurrent.futures.ThreadPoolExecutor(queued) as pool,
        _client(broken) as client,
    ):
        futures = [pool.submit(_chat, client, "repeated") for _ in range(queued)]
        _wait_for(lambda: runner.live_requests == queued + 1)
        backend.decode_failures.extend(
            RuntimeError(f"test double: failure {i}") for i in range(MAX_FAILED_STEPS)
        )
        assert stream.chunks()[-1]["error"]["code"] == "backend_error"
        responses = [future.result(60) for future in futures]

    codes = [r.json()["error"]["code"] for r in responses]
    assert all(r.status_code == 503 for r in responses)
    assert codes.count("backend_error") == MAX_FAILED_STEPS - 1
    assert codes.count("model_failed") == queued - (MAX_FAILED_STEPS - 1)
    assert not backend.decode_failures
    entry = _failed_entry(broken, "repeated")
    assert f"{MAX_FAILED_STEPS} steps failed in a row" in entry["reason"]
    assert (runner.live_requests, runner.active_sequences) == (0, 0)
    with _client(broken) as client:
        _error(_chat(client, "repeated"), 503, "model_failed")
    _assert_serves(broken, "healthy")


def test_a_step_thread_that_dies_marks_the_model_failed(broken: RunningServer) -> None:
    runner = _runner(broken, "dies")
    _backend(broken, "dies").decode_failures.append(StepThreadKiller())
    with _client(broken) as client:
        _error(_chat(client, "dies"), 503, "model_failed")
        _wait_for(lambda: "inferflux-step-dies" not in {t.name for t in threading.enumerate()})
        started = time.monotonic()
        _error(_chat(client, "dies"), 503, "model_failed")
        assert time.monotonic() - started < 2
    entry = _failed_entry(broken, "dies")
    assert "the step thread died: StepThreadKiller" in entry["reason"]
    assert (runner.live_requests, runner.active_sequences) == (0, 0)
    _assert_serves(broken, "healthy")
