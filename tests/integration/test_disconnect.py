"""A client that goes away mid-stream has its sequence freed, and the KV is reused."""

from __future__ import annotations

import httpx
import openai

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
