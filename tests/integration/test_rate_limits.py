"""Rate limits on a real server: a burst gets 429 with OpenAI's headers; limits change live."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import MODEL_NAME, RunningServer
from tests.integration.test_disconnect import post_and_hang_up

#: About 60 prompt tokens: one short request is over a 40-tokens-per-minute budget.
LONG_PROMPT = "one two three four five six seven eight nine ten " * 6


@pytest.fixture
def http(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        yield client


def _new_key(http: httpx.Client, server: RunningServer, **limits: int) -> tuple[str, str]:
    body: dict[str, Any] = {"name": "limited", "limits": limits}
    created = http.post("/v1/admin/keys", json=body, headers=server.auth_headers).json()
    return created["id"], created["key"]


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_a_burst_over_the_request_limit_gets_429_with_retry_after(
    server: RunningServer, http: httpx.Client
) -> None:
    _, key = _new_key(http, server, requests_per_minute=3)
    responses = [http.get("/v1/models", headers=_bearer(key)) for _ in range(6)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429, 429, 429]
    ok, limited = responses[0], responses[3]
    assert ok.headers["x-ratelimit-limit-requests"] == "3"
    assert ok.headers["x-ratelimit-remaining-requests"] == "2"
    assert ok.headers["x-ratelimit-reset-requests"].endswith("s")
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.headers["x-ratelimit-remaining-requests"] == "0"
    error = limited.json()["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"


def test_tokens_used_are_charged_and_a_key_in_debt_gets_429(
    server: RunningServer, http: httpx.Client
) -> None:
    _, key = _new_key(http, server, tokens_per_minute=40)
    body = {"model": MODEL_NAME, "prompt": LONG_PROMPT, "max_tokens": 2}
    first = http.post("/v1/completions", json=body, headers=_bearer(key))
    assert first.status_code == 200
    assert first.json()["usage"]["total_tokens"] > 40
    assert first.headers["x-ratelimit-remaining-tokens"] == "0"
    second = http.post("/v1/completions", json=body, headers=_bearer(key))
    assert second.status_code == 429
    assert "tokens" in second.json()["error"]["message"]
    assert int(second.headers["retry-after"]) >= 1
    assert http.get("/v1/models", headers=_bearer(key)).status_code == 200


def test_a_streamed_request_is_charged_when_it_ends(
    server: RunningServer, http: httpx.Client
) -> None:
    _, key = _new_key(http, server, tokens_per_minute=40)
    body = {"model": MODEL_NAME, "prompt": LONG_PROMPT, "max_tokens": 2, "stream": True}
    with http.stream("POST", "/v1/completions", json=body, headers=_bearer(key)) as response:
        assert response.status_code == 200
        response.read()
    assert server.wait_idle()
    again = http.post("/v1/completions", json={**body, "stream": False}, headers=_bearer(key))
    assert again.status_code == 429


def test_limits_changed_through_the_admin_api_apply_to_the_next_request(
    server: RunningServer, http: httpx.Client
) -> None:
    key_id, key = _new_key(http, server, requests_per_minute=100)
    assert http.get("/v1/models", headers=_bearer(key)).status_code == 200
    patched = http.patch(
        f"/v1/admin/keys/{key_id}",
        json={"limits": {"requests_per_minute": 1}},
        headers=server.auth_headers,
    )
    assert patched.json()["limits"]["requests_per_minute"] == 1
    assert http.get("/v1/models", headers=_bearer(key)).status_code == 200
    assert http.get("/v1/models", headers=_bearer(key)).status_code == 429


def test_default_limits_from_the_admin_api_cover_keys_without_their_own(
    server: RunningServer, http: httpx.Client
) -> None:
    _, key = _new_key(http, server)
    assert "x-ratelimit-limit-requests" not in http.get("/v1/models", headers=_bearer(key)).headers
    admin = server.auth_headers
    try:
        put = http.put("/v1/admin/limits", json={"requests_per_minute": 1000}, headers=admin)
        assert put.json() == {"requests_per_minute": 1000, "tokens_per_minute": None}
        limited = http.get("/v1/models", headers=_bearer(key))
        assert limited.headers["x-ratelimit-limit-requests"] == "1000"
    finally:
        http.put("/v1/admin/limits", json={}, headers=admin)
    assert http.get("/v1/admin/limits", headers=admin).json()["requests_per_minute"] is None


async def _burst(
    server: RunningServer, key: str, body: dict[str, Any], n: int
) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
        return list(
            await asyncio.gather(
                *(client.post("/v1/completions", json=body, headers=_bearer(key)) for _ in range(n))
            )
        )


def test_a_concurrent_burst_cannot_spend_more_than_the_token_limit(
    server: RunningServer, http: httpx.Client
) -> None:
    _, key = _new_key(http, server, tokens_per_minute=30)
    body = {"model": MODEL_NAME, "prompt": "Once upon a time", "max_tokens": 8}
    responses = asyncio.run(_burst(server, key, body, 6))
    assert server.wait_idle()
    admitted = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 429]
    assert len(admitted) + len(refused) == 6
    assert admitted and refused
    worst = admitted[0].json()["usage"]["prompt_tokens"] + 8
    assert len(admitted) <= 30 // worst
    assert sum(r.json()["usage"]["total_tokens"] for r in admitted) <= 30
    limited = refused[0]
    error = limited.json()["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
    assert "tokens per minute" in error["message"] and f"up to {worst} tokens" in error["message"]
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.headers["x-ratelimit-limit-tokens"] == "30"
    assert int(limited.headers["x-ratelimit-remaining-tokens"]) < worst
    _, other = _new_key(http, server, tokens_per_minute=1000)
    assert http.post("/v1/completions", json=body, headers=_bearer(other)).status_code == 200
    assert server.wait_idle()


def test_a_concurrent_chat_burst_is_refused_before_it_holds_a_sequence(
    server: RunningServer, http: httpx.Client
) -> None:
    _, key = _new_key(http, server, tokens_per_minute=40)
    body = {"model": MODEL_NAME, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
            return list(
                await asyncio.gather(
                    *(
                        client.post("/v1/chat/completions", json=body, headers=_bearer(key))
                        for _ in range(6)
                    )
                )
            )

    responses = asyncio.run(burst())
    assert server.wait_idle()
    statuses = sorted(r.status_code for r in responses)
    assert statuses[0] == 200 and statuses[-1] == 429 and set(statuses) == {200, 429}
    used = sum(r.json()["usage"]["total_tokens"] for r in responses if r.status_code == 200)
    assert used <= 40


def test_the_unused_part_of_a_reservation_is_given_back(
    server: RunningServer, http: httpx.Client
) -> None:
    prompt = {"model": MODEL_NAME, "prompt": "Once upon a time", "temperature": 0}
    probe = http.post(
        "/v1/completions", json={**prompt, "max_tokens": 6}, headers=server.auth_headers
    )
    words = probe.json()["choices"][0]["text"].split()
    assert len(words) >= 2, "the model wrote too little to take a stop phrase from"
    _, key = _new_key(http, server, tokens_per_minute=1000)
    body = {**prompt, "max_tokens": 400, "stop": [words[1]]}
    response = http.post("/v1/completions", json=body, headers=_bearer(key))
    assert server.wait_idle()
    assert response.status_code == 200
    used = response.json()["usage"]["total_tokens"]
    assert used < 100  # stopped early, far below the 400 + prompt it reserved
    remaining = int(response.headers["x-ratelimit-remaining-tokens"])
    assert 1000 - used <= remaining <= 1000 - used + 10


def test_a_client_that_hangs_up_is_charged_the_tokens_it_was_given(
    server: RunningServer, http: httpx.Client
) -> None:
    """Tokens generated before a non-streaming client hangs up are charged, so hanging up
    just before the end is no way around the limit."""
    messages = [{"role": "user", "content": "Tell me a very long story."}]
    probe = http.post(
        "/v1/chat/completions",
        json={"model": MODEL_NAME, "messages": messages, "max_tokens": 1},
        headers=server.auth_headers,
    )
    n_prompt = probe.json()["usage"]["prompt_tokens"]
    limit = 60  # refills one token a second
    _, key = _new_key(http, server, tokens_per_minute=limit)
    runner = server.engine.model(MODEL_NAME).runner
    body = {"model": MODEL_NAME, "messages": messages, "max_tokens": 900, "ignore_eos": True}

    def generating_a_while() -> bool:
        if runner.active_sequences != 1:
            return False
        time.sleep(1.5)
        return True

    post_and_hang_up(server, "/v1/chat/completions", body, generating_a_while, api_key=key)
    assert server.wait_idle(timeout=5)
    after = http.post(
        "/v1/completions",
        json={"model": MODEL_NAME, "prompt": "Hi", "max_tokens": 1},
        headers=_bearer(key),
    )
    if after.status_code == 429:  # charged past the whole limit: in debt
        return
    assert after.status_code == 200, after.text
    remaining = int(after.headers["x-ratelimit-remaining-tokens"])
    charged_before = limit - remaining - after.json()["usage"]["total_tokens"]
    assert charged_before > n_prompt + 5, (charged_before, n_prompt)
