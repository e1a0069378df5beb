"""Rate limits on a real server: a burst gets 429 with OpenAI's headers; limits change live."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import MODEL_NAME, RunningServer

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
