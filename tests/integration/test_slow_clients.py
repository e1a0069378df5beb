"""Slow clients cannot hold connections: the header-read, body-read and keep-alive timeouts.

A server with ``header_timeout_seconds: 1``, ``body_timeout_seconds: 2`` and
``keep_alive_timeout_seconds: 1``; raw sockets play the slow clients (slowloris) while normal
requests go on being served.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from inferflux_core.config import Settings, load_config
from inferflux_core.errors import ConfigError
from tests.conftest import MODEL_NAME, RunningServer, free_port, start_server

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 2.0
KEEP_ALIVE = 1
#: How late after its timeout a connection may still be closed (a loaded 2-core machine).
SLACK = 1.5
CHAT = {
    "model": MODEL_NAME,
    "messages": [{"role": "user", "content": "Hello"}],
    "max_tokens": 2,
}


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    settings = Settings.model_validate(
        {
            "server": {
                "port": free_port(),
                "log_level": "warning",
                "header_timeout_seconds": HEADER_TIMEOUT,
                "body_timeout_seconds": BODY_TIMEOUT,
                "keep_alive_timeout_seconds": KEEP_ALIVE,
            },
            "models": [{"name": MODEL_NAME, "context_length": 512, "max_sequences": 2}],
        }
    )
    running = start_server(settings)
    yield running
    running.stop()


@pytest.fixture
def http(slow: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=slow.base_url, headers=slow.auth_headers, timeout=30) as client:
        yield client
        assert client.get("/healthz").status_code == 200
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
    assert slow.wait_idle(), "a request was left holding a sequence"


def _connect(server: RunningServer) -> socket.socket:
    host, port = server.base_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.setblocking(False)
    return sock


def _closed(sock: socket.socket) -> bool:
    """True once the server has closed the connection (what it sent before is skipped)."""
    try:
        while data := sock.recv(65536):
            del data
        return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def _send(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):  # closed by the server: _closed says so
        sock.send(data)


def _wait_closed(sockets: list[socket.socket], seconds: float, trickle: bool) -> float:
    """Seconds until every socket is closed (fails after ``seconds``), sending a header
    line on each still open one every 0.2 s if ``trickle``."""
    started = time.monotonic()
    open_ = list(sockets)
    while open_ and time.monotonic() - started < seconds:
        if trickle:
            for sock in open_:
                _send(sock, b"X-Slow: 1\r\n")
        time.sleep(0.2)
        open_ = [s for s in open_ if not _closed(s)]
    assert not open_, f"{len(open_)} of {len(sockets)} connections still open after {seconds} s"
    return time.monotonic() - started


def _response(sock: socket.socket, seconds: float = 10) -> bytes:
    """What the server sent until the end of one ``Content-Length`` response."""
    sock.setblocking(True)
    sock.settimeout(seconds)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += sock.recv(65536)
    sock.setblocking(False)
    return head


def test_trickled_headers_are_cut_off_while_others_are_served(
    slow: RunningServer, http: httpx.Client
) -> None:
    sockets = [_connect(slow) for _ in range(40)]
    try:
        for sock in sockets:
            _send(sock, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            closing = pool.submit(_wait_closed, sockets, HEADER_TIMEOUT + SLACK, True)
            assert http.get("/healthz").status_code == 200
            assert http.post("/v1/chat/completions", json=CHAT).status_code == 200
            assert closing.result() >= HEADER_TIMEOUT - 0.3
    finally:
        for sock in sockets:
            sock.close()


def test_a_connection_that_sends_nothing_is_closed(slow: RunningServer, http: httpx.Client) -> None:
    sockets = [_connect(slow) for _ in range(5)]
    try:
        _wait_closed(sockets, HEADER_TIMEOUT + SLACK, trickle=False)
    finally:
        for sock in sockets:
            sock.close()


def test_an_idle_kept_alive_connection_is_closed(slow: RunningServer, http: httpx.Client) -> None:
    sock = _connect(slow)
    try:
        sock.setblocking(True)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _response(sock).startswith(b"HTTP/1.1 200")
        _wait_closed([sock], KEEP_ALIVE + SLACK, trickle=False)
    finally:
        sock.close()


def _completion_request(server: RunningServer) -> tuple[bytes, bytes]:
    """The head (without its blank line) and body of a one-token completion request."""
    body = b'{"model": "' + MODEL_NAME.encode() + b'", "prompt": "Hi", "max_tokens": 1}'
    head = (
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + server.api_key.encode() + b"\r\n"
        b"Content-Length: " + str(len(body)).encode()
    )
    return head, body


def test_slow_headers_and_body_that_arrive_in_time_are_served(
    slow: RunningServer, http: httpx.Client
) -> None:
    sock = _connect(slow)
    head, body = _completion_request(slow)
    third = len(body) // 3 + 1
    try:
        for _ in range(2):  # two requests on one kept-alive connection: each has its clocks
            for piece in (head[:20], head[20:], b"\r\n\r\n"):
                _send(sock, piece)
                time.sleep(HEADER_TIMEOUT / 4)
            # The body has its own clock: together they take longer than the header timeout.
            for index in range(0, len(body), third):
                _send(sock, body[index : index + third])
                time.sleep(BODY_TIMEOUT / 5)
            assert _response(sock, 30).startswith(b"HTTP/1.1 200")
    finally:
        sock.close()


def test_a_body_that_stalls_is_cut_off(slow: RunningServer, http: httpx.Client) -> None:
    sockets = [_connect(slow) for _ in range(10)]
    head, body = _completion_request(slow)
    try:
        for sock in sockets:
            _send(sock, head + b"\r\n\r\n" + body[:10])
        took = _wait_closed(sockets, BODY_TIMEOUT + SLACK, trickle=False)
        assert took >= BODY_TIMEOUT - 0.5
    finally:
        for sock in sockets:
            sock.close()


def test_the_timeouts_are_server_settings_with_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    server = Settings().server
    timeouts = (
        server.header_timeout_seconds,
        server.body_timeout_seconds,
        server.keep_alive_timeout_seconds,
    )
    assert timeouts == (5.0, 60.0, 5)
    monkeypatch.setenv("INFERFLUX_SERVER__HEADER_TIMEOUT_SECONDS", "0")
    with pytest.raises(ConfigError) as caught:
        load_config()
    assert "server.header_timeout_seconds" in caught.value.message
