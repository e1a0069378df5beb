"""A client that goes away mid-stream, or before its non-streaming response is ready, has its
sequences freed, and the server goes on serving."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable

import httpx
import openai
import pytest

from tests.conftest import MODEL_NAME, RunningServer


def test_disconnect_mid_stream_frees_the_sequence(
    server: RunningServer, openai_client: openai.OpenAI
) -> None:
    body = {
        "model": MODEL_NAME,
        "messages": [{"role": "user", "content": "Tell me a very long story."}],
        "max_tokens": 1500,
        "ignore_eos": True,
        "stream": True,
    }
    runner = server.engine.model(MODEL_NAME).runner
    with (
        httpx.Client(base_url=server.base_url, headers=server.auth_headers, timeout=60) as client,
        client.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        assert response.status_code == 200
        lines = response.iter_lines()
        data_lines = [line for line in (next(lines) for _ in range(12)) if line]
        assert len(data_lines) >= 5
        assert runner.active_sequences == 1
    assert server.wait_idle(timeout=10), "the disconnected stream still holds its sequence"

    after = openai_client.chat.completions.create(
        model=MODEL_NAME, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    assert after.usage is not None and after.usage.completion_tokens >= 1
    assert server.wait_idle()


def post_and_hang_up(
    server: RunningServer,
    path: str,
    body: dict[str, object],
    until: Callable[[], bool],
    *,
    request_id: str = "hang-up",
    timeout: float = 60.0,
    api_key: str | None = None,
) -> None:
    """POST a non-streaming request on a raw socket, wait until ``until()`` holds (the request
    runs), then close the connection without reading the response."""
    data = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {server.base_url.removeprefix('http://')}\r\n"
        f"Authorization: Bearer {api_key or server.api_key}\r\nX-Request-ID: {request_id}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    host, port = server.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(head.encode() + data)
        deadline = time.monotonic() + timeout
        while not until():
            assert time.monotonic() < deadline, "the request never started"
            time.sleep(0.01)


LONG = {"max_tokens": 1500, "ignore_eos": True}
STORY = [{"role": "user", "content": "Tell me a very long story."}]


@pytest.mark.parametrize(
    ("path", "body", "n_sequences"),
    [
        ("/v1/chat/completions", {"messages": STORY, **LONG}, 1),
        ("/v1/chat/completions", {"messages": STORY, "n": 2, **LONG}, 2),
        ("/v1/completions", {"prompt": "Once upon a time", "n": 3, **LONG}, 3),
        ("/v1/completions", {"prompt": "Once upon a time", "best_of": 3, **LONG}, 3),
    ],
    ids=["chat", "chat-n2", "completions-n3", "completions-best-of-3"],
)
def test_a_non_streaming_client_that_hangs_up_frees_its_sequences(
    server: RunningServer,
    openai_client: openai.OpenAI,
    path: str,
    body: dict[str, object],
    n_sequences: int,
) -> None:
    runner = server.engine.model(MODEL_NAME).runner
    assert server.wait_idle()
    post_and_hang_up(
        server,
        path,
        {"model": MODEL_NAME, **body},
        lambda: runner.active_sequences == n_sequences,
    )
    assert server.wait_idle(timeout=2), "the abandoned request still holds its sequences"

    after = openai_client.completions.create(model=MODEL_NAME, prompt="Hi", max_tokens=4)
    assert after.usage is not None and after.usage.completion_tokens >= 1
    assert server.wait_idle()
