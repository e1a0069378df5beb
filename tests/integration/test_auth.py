"""Authentication and authorization on a real server: every rejection path, and no bypass.

Each rejection is checked for its status, its OpenAI-shaped body, and that nothing else
happened: the policy kept its version and the engine generated nothing.
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inferflux_core.auth.policy_admin import KeyCreate, PolicyAdmin
from tests.conftest import MODEL_NAME, RunningServer

CHAT_BODY = {"model": MODEL_NAME, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
PROTECTED = [
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/completions"),
    ("GET", "/v1/models"),
    ("GET", f"/v1/models/{MODEL_NAME}"),
    ("GET", "/metrics"),
    ("GET", "/v1/admin/keys"),
    ("POST", "/v1/admin/keys"),
    ("GET", "/v1/admin/policy"),
    ("GET", "/v1/no-such-route"),
    ("DELETE", "/v1/models"),
]


def _state(server: RunningServer) -> tuple[int, float]:
    """The policy's version and the number of requests the engine finished."""
    finished = sum(
        sample.value
        for family in server.engine.metrics.registry.collect()
        for sample in family.samples
        if sample.name == "inferflux_requests_total"
    )
    return server.access.store.read().version, finished


def _error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    if code is not None:
        assert body["error"]["code"] == code, body
    if status == 401:
        assert response.headers["www-authenticate"] == "Bearer"
    return dict(body["error"])


def _key(server: RunningServer, **spec: Any) -> str:
    return str(PolicyAdmin(server.access.store).create_key(KeyCreate(name="t", **spec))["key"])


@pytest.fixture
def anonymous(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        yield client


def _raw(server: RunningServer, method: str, path: str, headers: dict[str, str]) -> int:
    """Send ``path`` byte for byte (httpx would normalize dot segments)."""
    parts = urlsplit(server.base_url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_every_protected_route_without_a_credential_is_401(
    server: RunningServer, anonymous: httpx.Client, method: str, path: str
) -> None:
    before = _state(server)
    body = CHAT_BODY if method == "POST" else None
    error = _error(anonymous.request(method, path, json=body), 401, "missing_credentials")
    assert error["type"] == "authentication_error"
    assert _state(server) == before


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer",
        "Bearer  two  words",
        "Basic dXNlcjpwYXNz",
        "Token ifx-0123456789abcdef.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "Bearer ifx-0123456789abcdef.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "Bearer not-a-key",
        "Bearer a.b.c",
        "Bearer " + "x" * 20_000,
    ],
)
def test_invalid_credentials_are_401_and_not_echoed(
    server: RunningServer, anonymous: httpx.Client, authorization: str
) -> None:
    before = _state(server)
    response = anonymous.post(
        "/v1/chat/completions", json=CHAT_BODY, headers={"Authorization": authorization}
    )
    _error(response, 401)
    token = authorization.partition(" ")[2]
    assert not token or token not in response.text
    assert _state(server) == before


def test_a_valid_key_with_a_wrong_secret_is_401(
    server: RunningServer, anonymous: httpx.Client
) -> None:
    key = _key(server)
    forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    before = _state(server)
    for candidate in (forged, key[:-1], key + "A", key.upper()):
        response = anonymous.get("/v1/models", headers={"Authorization": f"Bearer {candidate}"})
        _error(response, 401, "invalid_api_key")
    assert _state(server) == before
    ok = anonymous.get("/v1/models", headers={"Authorization": f"bearer   {key}"})
    assert ok.status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "//v1/models",
        "/v1//models",
        "/v1/./models",
        "/v1/../v1/models",
        "/healthz/../v1/models",
        "/v1%2Fmodels",
        "/v1/models%2F",
        "/healthz%2F..%2Fv1%2Fmodels",
        "/v1/%2e/models",
        "/v1\\models",
        "/v1/models%00",
    ],
)
def test_path_variants_are_refused_with_or_without_a_credential(
    server: RunningServer, path: str
) -> None:
    before = _state(server)
    assert _raw(server, "GET", path, {}) == 400
    assert _raw(server, "GET", path, server.auth_headers) == 400
    assert _state(server) == before


@pytest.mark.parametrize("path", ["/v1/models/", "/healthz/", "/HEALTHZ", "/readyz/x"])
def test_near_public_paths_are_not_public(server: RunningServer, path: str) -> None:
    assert _raw(server, "GET", path, {}) == 401


@pytest.mark.parametrize(
    ("method", "path"),
    [("HEAD", "/v1/models"), ("OPTIONS", "/v1/chat/completions"), ("OPTIONS", "/healthz")],
)
def test_head_and_options_need_a_credential(server: RunningServer, method: str, path: str) -> None:
    assert _raw(server, method, path, {}) == 401


def test_forged_host_and_forwarding_headers_do_not_authenticate(
    server: RunningServer, anonymous: httpx.Client
) -> None:
    forged = {
        "Host": "localhost",
        "X-Forwarded-For": "127.0.0.1",
        "X-Real-IP": "127.0.0.1",
        "X-Forwarded-Host": "localhost",
        "X-Forwarded-Proto": "https",
        "Forwarded": "for=127.0.0.1;host=localhost;proto=https",
        "X-Original-URL": "/healthz",
        "X-Rewrite-URL": "/healthz",
        "X-Forwarded-Prefix": "/healthz",
        "X-Api-Key": server.api_key,
        "Api-Key": server.api_key,
    }
    for path in ("/v1/models", "/v1/admin/keys"):
        _error(anonymous.get(path, headers=forged), 401, "missing_credentials")


def test_public_routes_need_no_credential(anonymous: httpx.Client) -> None:
    for path in ("/healthz", "/livez", "/readyz"):
        assert anonymous.get(path).status_code == 200
    _error(anonymous.get("/metrics"), 401)


def test_a_credential_without_the_scope_is_403(
    server: RunningServer, anonymous: httpx.Client
) -> None:
    monitor = {"Authorization": f"Bearer {_key(server, roles=['monitor'])}"}
    user = {"Authorization": f"Bearer {_key(server, roles=['user'])}"}
    before = _state(server)
    error = _error(anonymous.post("/v1/chat/completions", json=CHAT_BODY, headers=monitor), 403)
    assert error["code"] == "insufficient_scope" and error["type"] == "permission_error"
    _error(anonymous.get("/v1/models", headers=monitor), 403, "insufficient_scope")
    _error(anonymous.get("/v1/admin/keys", headers=user), 403, "insufficient_scope")
    _error(anonymous.post("/v1/admin/keys", json={"name": "x"}, headers=user), 403)
    _error(anonymous.get("/metrics", headers=user), 403, "insufficient_scope")
    assert _state(server) == before
    assert anonymous.get("/metrics", headers=monitor).status_code == 200


def test_a_key_limited_to_other_models_is_403(
    server: RunningServer, anonymous: httpx.Client
) -> None:
    headers = {"Authorization": f"Bearer {_key(server, models=['another-model'])}"}
    before = _state(server)
    error = _error(anonymous.post("/v1/chat/completions", json=CHAT_BODY, headers=headers), 403)
    assert error["code"] == "model_not_allowed" and error["param"] == "model"
    _error(anonymous.get(f"/v1/models/{MODEL_NAME}", headers=headers), 403, "model_not_allowed")
    assert anonymous.get("/v1/models", headers=headers).json()["data"] == []
    assert _state(server) == before


def test_revocation_takes_effect_on_the_next_request(
    server: RunningServer, anonymous: httpx.Client
) -> None:
    key = _key(server)
    headers = {"Authorization": f"Bearer {key}"}
    assert anonymous.get("/v1/models", headers=headers).status_code == 200
    key_id = key[4:20]
    revoked = anonymous.post(f"/v1/admin/keys/{key_id}/revoke", headers=server.auth_headers)
    assert revoked.status_code == 200 and revoked.json()["revoked"] is True
    error = _error(anonymous.get("/v1/models", headers=headers), 401, "invalid_api_key")
    assert "revoked" in str(error["message"])


def test_an_expired_key_is_401(server: RunningServer, anonymous: httpx.Client) -> None:
    headers = {"Authorization": f"Bearer {_key(server, expires_in=0.2)}"}
    time.sleep(0.3)  # a key cannot be made already expired
    error = _error(anonymous.get("/v1/models", headers=headers), 401, "invalid_api_key")
    assert "expired" in str(error["message"])


_header_values = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=0, max_size=80
)


@settings(
    max_examples=75, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    scheme=st.sampled_from(["Bearer", "bearer", "BEARER", "Basic", "", "ifx-"]),
    token=st.one_of(
        _header_values,
        _header_values.map(lambda t: "ifx-" + t),
        st.from_regex(r"ifx-[0-9a-f]{16}\.[A-Za-z0-9_-]{43}", fullmatch=True),
        st.from_regex(
            r"[A-Za-z0-9_-]{1,40}\.[A-Za-z0-9_-]{1,40}\.[A-Za-z0-9_-]{0,40}", fullmatch=True
        ),
    ),
    path=st.sampled_from(["/v1/models", "/v1/chat/completions", "/v1/admin/keys", "/metrics"]),
)
def test_fuzzed_authorization_headers_get_only_401(
    server: RunningServer, anonymous: httpx.Client, scheme: str, token: str, path: str
) -> None:
    value = f"{scheme} {token}".strip()
    method = "POST" if path == "/v1/chat/completions" else "GET"
    response = anonymous.request(
        method, path, headers={"Authorization": value} if value else {}, json=CHAT_BODY
    )
    assert response.status_code == 401, (value, response.text)
    assert response.headers["www-authenticate"] == "Bearer"
