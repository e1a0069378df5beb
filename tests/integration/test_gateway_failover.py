"""The gateway's acceptance: two real ``inferflux serve`` upstreams on loopback behind a
gateway ``inferflux serve`` whose model is a pool of both; one upstream is SIGKILLed in the
middle of a run of 100 requests.

No request that had not started streaming fails (each failure the clients see is one the
gateway counts as cut mid-stream); a stream cut mid-way ends with an ``error`` event and
``[DONE]``, never a hang; then the dead upstream's breaker is open and every request goes to
the live one; a new process on the dead one's port is brought back by the health checks.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import MODEL_NAME
from tests.upstream_server import UpstreamServer, metric, start_serve, stop_upstream

UPSTREAM_MODELS = [
    {"name": MODEL_NAME, "context_length": 1024, "max_sequences": 4, "options": {"threads": 1}}
]
RUN = 100
CONCURRENCY = 6
KILL_AFTER = 30
MAX_TOKENS = 6


@dataclass
class Pool:
    """The two upstreams and the gateway in front of them."""

    upstreams: list[UpstreamServer]
    gateway: UpstreamServer
    directories: list[Path]

    def gateway_metric(self, name: str) -> float:
        """``inferflux_backend_<name>{model="pool"}`` on the gateway."""
        value = metric(self.gateway.metrics_text(), f"inferflux_backend_{name}", model="pool")
        assert value is not None, name
        return value

    def wait_for(self, name: str, value: float, timeout: float = 30) -> None:
        """Poll the gateway's metric ``name`` until it is ``value``."""
        deadline = time.monotonic() + timeout
        while self.gateway_metric(name) != value:
            assert time.monotonic() < deadline, f"{name} never became {value}"
            time.sleep(0.1)


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    """Upstreams 0 and 1, and the gateway with model ``pool`` over both."""
    directories = [tmp_path_factory.mktemp(f"upstream{i}") for i in range(2)]
    upstreams = [start_serve(d, UPSTREAM_MODELS) for d in directories]
    options = {
        "upstreams": [
            {"base_url": u.api_url, "api_key_env": f"POOL_KEY_{i}"} for i, u in enumerate(upstreams)
        ],
        "health_interval_seconds": 0.3,
        "breaker_failures": 2,
        "breaker_cooldown_seconds": 1.0,
        "timeout_seconds": 60,
    }
    model = {
        "name": "pool",
        "source": MODEL_NAME,
        "backend": "openai_upstream",
        "max_sequences": 32,
        "options": options,
    }
    keys = {f"POOL_KEY_{i}": u.api_key for i, u in enumerate(upstreams)}
    gateway = start_serve(tmp_path_factory.mktemp("pool-gateway"), [model], keys)
    running = Pool(upstreams, gateway, directories)
    try:
        yield running
    finally:
        for server in [gateway, *running.upstreams]:
            stop_upstream(server)


@dataclass
class Outcome:
    """What one client saw."""

    stream: bool
    status: int = 0
    content_before_error: bool = False
    error: dict[str, object] | None = None
    done: bool = False
    text: str = ""
    events: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        """The request did not get a whole answer."""
        return self.status != 200 or self.error is not None


def body(stream: bool, max_tokens: int = MAX_TOKENS, **extra: object) -> dict[str, object]:
    """A small greedy chat request for the pool."""
    return {
        "model": "pool",
        "messages": [{"role": "user", "content": "Name a colour."}],
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "stream": stream,
        **extra,
    }


def read_stream(
    response: httpx.Response,
    outcome: Outcome,
    stop: threading.Event,
    started: threading.Event | None = None,
) -> None:
    """Read SSE ``data`` lines into ``outcome`` until ``[DONE]`` (or ``stop``); set
    ``started`` at the first content."""
    for line in response.iter_lines():
        if not line.startswith("data: "):
            continue
        data = line[len("data: ") :]
        outcome.events.append(data)
        if data == "[DONE]":
            outcome.done = True
            return
        chunk = json.loads(data)
        if "error" in chunk:
            outcome.error = chunk["error"]
            continue
        for choice in chunk.get("choices", []):
            content = choice.get("delta", {}).get("content") or ""
            if content:
                outcome.text += content
                outcome.content_before_error = outcome.error is None
                if started is not None:
                    started.set()
        if stop.is_set():
            return


def send(client: httpx.Client, stream: bool, stop: threading.Event | None = None) -> Outcome:
    """One request through the gateway; what came back."""
    outcome = Outcome(stream)
    if not stream:
        response = client.post("/v1/chat/completions", json=body(False))
        outcome.status = response.status_code
        if response.status_code != 200:
            outcome.error = response.json().get("error")
        return outcome
    with client.stream("POST", "/v1/chat/completions", json=body(True)) as response:
        outcome.status = response.status_code
        if response.status_code != 200:
            response.read()
            outcome.error = response.json().get("error")
            return outcome
        read_stream(response, outcome, stop or threading.Event())
    return outcome


def requests_served(server: UpstreamServer) -> float:
    """``inferflux_requests_total`` of the default model, every finish reason summed."""
    lines = server.metrics_text().splitlines()
    wanted = f'model="{MODEL_NAME}"'
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith("inferflux_requests_total{") and wanted in line
    )


class LongStream:
    """A streamed request that keeps generating, read in a thread."""

    def __init__(self, client: httpx.Client) -> None:
        self.outcome = Outcome(True)
        self.stop = threading.Event()
        self.started = threading.Event()
        self._client = client
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        request = body(True, max_tokens=1000, ignore_eos=True)
        with self._client.stream("POST", "/v1/chat/completions", json=request) as response:
            self.outcome.status = response.status_code
            read_stream(response, self.outcome, self.stop, self.started)

    def join(self, timeout: float) -> bool:
        """Wait for the reader to end; False if it is still reading."""
        self._thread.join(timeout)
        return not self._thread.is_alive()


def test_killing_an_upstream_mid_run_fails_only_streams_already_under_way(pool: Pool) -> None:
    gateway = pool.gateway
    headers = {"Authorization": f"Bearer {gateway.api_key}"}
    client = httpx.Client(base_url=gateway.base_url, headers=headers, timeout=60)
    pool.wait_for("num_upstreams_healthy", 2)
    victim, survivor = pool.upstreams
    # One long stream on each upstream (least outstanding: the second goes to the other).
    long_streams = [LongStream(client)]
    assert long_streams[0].started.wait(60)
    long_streams.append(LongStream(client))
    assert long_streams[1].started.wait(60)
    assert victim.active_sequences() >= 1 and survivor.active_sequences() >= 1

    done = threading.Semaphore(0)
    finished = 0
    lock = threading.Lock()

    def one(index: int) -> Outcome:
        nonlocal finished
        outcome = send(client, stream=index % 2 == 0)
        with lock:
            finished += 1
            if finished == KILL_AFTER:
                done.release()
        return outcome

    with ThreadPoolExecutor(CONCURRENCY) as executor:
        futures = [executor.submit(one, i) for i in range(RUN)]
        assert done.acquire(timeout=300)
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait(timeout=10)
        outcomes = [f.result(timeout=300) for f in futures]

    # The long stream on the dead upstream was cut: an error event, then [DONE]; no hang.
    assert long_streams[0].join(60) or long_streams[1].join(60)
    cut = [s for s in long_streams if not s._thread.is_alive()]
    assert len(cut) == 1, "exactly the long stream on the killed upstream ended"
    cut_outcome = cut[0].outcome
    assert cut_outcome.content_before_error and cut_outcome.error is not None
    assert cut_outcome.error["code"] == "upstream_unavailable" and cut_outcome.done
    assert cut_outcome.events[-2:][-1] == "[DONE]" and "error" in cut_outcome.events[-2]
    for stream in long_streams:
        stream.stop.set()

    failed = [o for o in outcomes if o.failed]
    for outcome in failed:  # only a stream already under way may fail, and it says so
        assert outcome.status in (200, 503), outcome
        if outcome.stream:
            assert outcome.content_before_error and outcome.done, outcome
    assert len(failed) <= CONCURRENCY
    assert pool.gateway_metric("num_requests_unavailable_total") == 0
    assert pool.gateway_metric("num_requests_cut_mid_stream_total") == len(failed) + 1
    assert sum(not o.failed for o in outcomes) >= RUN - CONCURRENCY

    # The dead upstream's breaker opens; every later request goes to the live one.
    pool.wait_for("upstream_0_breaker_open", 1)
    sent_to_victim = pool.gateway_metric("upstream_0_requests_total")
    retries, served = pool.gateway_metric("num_retries_total"), requests_served(survivor)
    later = [send(client, stream=i % 2 == 0) for i in range(6)]
    assert not any(o.failed for o in later)
    assert pool.gateway_metric("upstream_0_requests_total") == sent_to_victim
    assert pool.gateway_metric("num_retries_total") == retries
    assert requests_served(survivor) - served >= 6

    # A new process on the dead one's port, same key: the health checks bring it back.
    revived = start_serve(
        pool.directories[0], UPSTREAM_MODELS, port=victim.port, api_key=victim.api_key
    )
    pool.upstreams[0] = revived
    pool.wait_for("upstream_0_breaker_open", 0)
    pool.wait_for("upstream_0_healthy", 1)
    before = pool.gateway_metric("upstream_0_requests_total")
    assert not any(send(client, stream=i % 2 == 0).failed for i in range(4))
    assert pool.gateway_metric("upstream_0_requests_total") >= before + 1
    assert pool.gateway_metric("num_upstreams_healthy") == 2
    client.close()
