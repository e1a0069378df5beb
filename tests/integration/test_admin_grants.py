"""An admin key grants no more than it holds; expiries are sane; admin answers are strict JSON;
a request's priority is capped by its key."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from inferflux_core.auth.policy_admin import KeyCreate, PolicyAdmin
from inferflux_core.contracts import RateLimits
from tests.conftest import MODEL_NAME, RunningServer

ADMIN = "/v1/admin"


@pytest.fixture
def http(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        yield client


def _operator_key(server: RunningServer, **spec: Any) -> dict[str, str]:
    """A key made by the operator (on the store, unchecked): its Authorization header."""
    created = PolicyAdmin(server.access.store).create_key(KeyCreate(name="t", **spec))
    return {"Authorization": f"Bearer {created['key']}"}


@pytest.fixture
def narrow_admin(server: RunningServer) -> dict[str, str]:
    """An admin key limited to one model, 10 tokens a minute, priority 2, a day to live."""
    return _operator_key(
        server,
        roles=["admin"],
        models=[MODEL_NAME],
        limits=RateLimits(tokens_per_minute=10),
        max_priority=2,
        expires_in=86_400,
    )


def _refused(response: httpx.Response, status: int, param: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = dict(response.json()["error"])
    assert error["param"] == param, error
    return error


def _within(**extra: Any) -> dict[str, Any]:
    """A key body that fits inside ``narrow_admin``, changed by ``extra``."""
    body: dict[str, Any] = {
        "name": "child",
        "roles": ["user"],
        "models": [MODEL_NAME],
        "limits": {"tokens_per_minute": 10},
        "expires_in": 3600,
    }
    return {**body, **extra}


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"roles": ["admin"], "scopes": []}, None),  # admin is within an admin key
        ({"models": []}, "models"),
        ({"models": ["another-model"]}, "models"),
        ({"limits": {}}, "limits.tokens_per_minute"),
        ({"limits": {"tokens_per_minute": 11}}, "limits.tokens_per_minute"),
        ({"max_priority": 3}, "max_priority"),
        ({"expires_in": None}, "expires_at"),
        ({"expires_in": 2 * 86_400}, "expires_at"),
    ],
)
def test_an_admin_key_cannot_create_a_key_wider_than_itself(
    server: RunningServer,
    http: httpx.Client,
    narrow_admin: dict[str, str],
    extra: dict[str, Any],
    param: str | None,
) -> None:
    version = server.access.store.read().version
    response = http.post(f"{ADMIN}/keys", json=_within(**extra), headers=narrow_admin)
    if param is None:
        assert response.status_code == 201, response.text
        return
    error = _refused(response, 403, param)
    assert error["code"] == "exceeds_own_grants" and error["type"] == "permission_error"
    assert "cannot grant more than it holds" in error["message"]
    assert server.access.store.read().version == version
    assert http.post(f"{ADMIN}/keys", json=_within(), headers=narrow_admin).status_code == 201
    assert server.wait_idle()


def test_an_admin_key_cannot_widen_a_key_a_role_or_the_default_limits(
    server: RunningServer, http: httpx.Client, narrow_admin: dict[str, str]
) -> None:
    child = http.post(f"{ADMIN}/keys", json=_within(), headers=narrow_admin).json()
    key_url = f"{ADMIN}/keys/{child['id']}"
    _refused(http.patch(key_url, json={"models": []}, headers=narrow_admin), 403, "models")
    _refused(
        http.patch(key_url, json={"limits": {"tokens_per_minute": 1000}}, headers=narrow_admin),
        403,
        "limits.tokens_per_minute",
    )
    _refused(
        http.patch(key_url, json={"expires_at": None}, headers=narrow_admin), 403, "expires_at"
    )
    renamed = http.patch(key_url, json={"name": "renamed"}, headers=narrow_admin)
    assert renamed.status_code == 200 and renamed.json()["name"] == "renamed"
    # Its own key cannot be widened either, nor the limits every key falls back on.
    _refused(http.put(f"{ADMIN}/limits", json={}, headers=narrow_admin), 403, "tokens_per_minute")
    policy = http.get(f"{ADMIN}/policy", headers=server.auth_headers).json()
    _refused(
        http.put(f"{ADMIN}/policy", json=policy, headers=narrow_admin),
        403,
        "default_limits.tokens_per_minute",
    )
    limited_role = _operator_key(server, roles=[], scopes=["admin"])
    error = _refused(
        http.put(f"{ADMIN}/roles/wide", json={"scopes": ["inference"]}, headers=limited_role),
        403,
        "scopes",
    )
    assert "'inference'" in error["message"]
    assert http.get(f"{ADMIN}/keys/{child['id']}", headers=narrow_admin).status_code == 200
    assert server.wait_idle()


def test_the_unrestricted_admin_key_still_grants_anything(
    server: RunningServer, http: httpx.Client
) -> None:
    body = {"name": "wide", "roles": ["admin"], "limits": {}, "models": []}
    assert http.post(f"{ADMIN}/keys", json=body, headers=server.auth_headers).status_code == 201


def _no_constants(name: str) -> None:
    raise AssertionError(f"the answer holds a bare {name}, which is not JSON")


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        ('{"name": "x", "expires_at": NaN}', "expires_at"),
        ('{"name": "x", "expires_at": Infinity}', "expires_at"),
        ('{"name": "x", "expires_at": -Infinity}', "expires_at"),
        ('{"name": "x", "expires_at": 1e300}', "expires_at"),
        ('{"name": "x", "expires_at": 1}', "expires_at"),
        ('{"name": "x", "expires_in": NaN}', "expires_in"),
        ('{"name": "x", "expires_in": 1e12}', "expires_in"),
        ('{"name": "x", "max_priority": 10000000}', "max_priority"),
    ],
)
def test_an_expiry_must_be_a_finite_time_within_ten_years(
    server: RunningServer, http: httpx.Client, raw: str, param: str
) -> None:
    headers = {**server.auth_headers, "Content-Type": "application/json"}
    response = http.post(f"{ADMIN}/keys", content=raw, headers=headers)
    error = _refused(response, 400, param)
    assert error["type"] == "invalid_request_error"
    json.loads(response.text, parse_constant=_no_constants)  # strict JSON, no bare NaN
    created = http.post(f"{ADMIN}/keys", content='{"name": "x", "expires_in": 60}', headers=headers)
    assert created.status_code == 201
    key_id = created.json()["id"]
    patched = http.patch(
        f"{ADMIN}/keys/{key_id}", content=raw.replace('"name": "x", ', ""), headers=headers
    )
    if param != "expires_in":
        _refused(patched, 400, param)


def test_every_admin_answer_is_strict_json(server: RunningServer, http: httpx.Client) -> None:
    headers = server.auth_headers
    one_hour = time.time() + 3600
    created = http.post(
        f"{ADMIN}/keys", json={"name": "j", "expires_at": one_hour}, headers=headers
    )
    key_id = created.json()["id"]
    for method, path in [
        ("GET", "/keys"),
        ("GET", f"/keys/{key_id}"),
        ("GET", "/roles"),
        ("GET", "/limits"),
        ("GET", "/policy"),
    ]:
        response = http.request(method, f"{ADMIN}{path}", headers=headers)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/json")
        json.loads(response.text, parse_constant=_no_constants)
    json.loads(created.text, parse_constant=_no_constants)
    assert server.wait_idle()


def _no_constants(name: str) -> None:
    raise AssertionError(f"the answer holds {name}, which is not JSON")


def test_a_priority_above_the_keys_cap_is_403_naming_priority(
    server: RunningServer, http: httpx.Client
) -> None:
    plain = _operator_key(server)
    capped = _operator_key(server, max_priority=5)
    body = {"model": MODEL_NAME, "prompt": "Hello", "max_tokens": 2}
    for headers, priority in [(plain, 1), (plain, 1000), (capped, 6)]:
        response = http.post(
            "/v1/completions", json={**body, "priority": priority}, headers=headers
        )
        error = _refused(response, 403, "priority")
        assert error["code"] == "priority_not_allowed"
        assert "at most" in error["message"]
    chat = {"model": MODEL_NAME, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    response = http.post("/v1/chat/completions", json={**chat, "priority": 1}, headers=plain)
    _refused(response, 403, "priority")
    for priority in (10**18, 1e18):  # outside every range: the request model's 400
        response = http.post("/v1/completions", json={**body, "priority": priority}, headers=plain)
        _refused(response, 400, "priority")
    for headers, priority in [(plain, 0), (plain, -3), (capped, 5), (capped, 0)]:
        response = http.post(
            "/v1/completions", json={**body, "priority": priority}, headers=headers
        )
        assert response.status_code == 200, response.text
    assert http.post("/v1/completions", json=body, headers=plain).status_code == 200
    assert server.wait_idle()
