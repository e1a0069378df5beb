"""OIDC bearer tokens against a real server: roles from claims, refusals, fuzzed claims."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import MODEL_NAME, SecuredServer
from tests.fakes import Issuer, b64url


@pytest.fixture
def anonymous(secured: SecuredServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=secured.running.base_url, timeout=60) as client:
        yield client


def _get(client: httpx.Client, token: str, path: str = "/v1/models") -> httpx.Response:
    return client.get(path, headers={"Authorization": f"Bearer {token}"})


def test_a_valid_token_with_the_user_role_reads_models_and_generates(
    issuer: Issuer, anonymous: httpx.Client
) -> None:
    token = issuer.token()
    assert [m["id"] for m in _get(anonymous, token).json()["data"]] == [MODEL_NAME]
    body = {"model": MODEL_NAME, "prompt": "Hello", "max_tokens": 2}
    reply = anonymous.post(
        "/v1/completions", json=body, headers={"Authorization": f"Bearer {token}"}
    )
    assert reply.status_code == 200, reply.text
    assert _get(anonymous, issuer.token(kid="ec-1")).status_code == 200


def test_roles_map_from_the_claim_to_scopes(issuer: Issuer, anonymous: httpx.Client) -> None:
    ops = issuer.token(issuer.claims(roles=["ops"]))
    assert _get(anonymous, ops, "/metrics").status_code == 200
    refused = _get(anonymous, ops, "/v1/admin/keys")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "insufficient_scope"
    nobody = issuer.token(issuer.claims(roles=["unmapped", "admin"]))  # only mapped names count
    assert _get(anonymous, nobody).status_code == 403
    boss = issuer.token(issuer.claims(roles=["boss"]))
    assert _get(anonymous, boss, "/v1/admin/keys").status_code == 200


@pytest.mark.parametrize(
    "change",
    [
        {"iss": "https://evil.example/realm"},
        {"aud": "another-service"},
        {"exp": int(time.time()) - 3600},
        {"nbf": int(time.time()) + 3600},
    ],
)
def test_an_invalid_token_is_401_with_www_authenticate(
    issuer: Issuer, anonymous: httpx.Client, change: dict[str, Any]
) -> None:
    token = issuer.token(issuer.claims(**change))
    response = _get(anonymous, token)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    error = response.json()["error"]
    assert error["code"] == "invalid_token" and token not in response.text


_claim_values = st.one_of(
    st.none(), st.booleans(), st.integers(), st.text(max_size=30), st.lists(st.text(max_size=10))
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_fuzzed_jwt_claims_are_refused_with_401_or_403_never_500(
    issuer: Issuer, anonymous: httpx.Client, data: st.DataObject
) -> None:
    valid = issuer.claims()
    claims: dict[str, Any] = {}
    for name in ("iss", "aud", "sub", "exp", "nbf", "iat", "roles"):
        choice = data.draw(st.sampled_from(["valid", "random", "absent"]), label=name)
        if choice == "valid" and name in valid:
            claims[name] = valid[name]
        elif choice == "random":
            claims[name] = data.draw(_claim_values, label=f"{name} value")
    try:
        token = issuer.token(claims)
    except (TypeError, ValueError):
        return  # PyJWT will not even sign it
    response = _get(anonymous, token, "/v1/admin/keys")
    if response.status_code == 200:  # only a complete, valid token naming the admin role
        assert "boss" in claims["roles"]
        assert all(claims[k] == valid[k] for k in ("iss", "aud", "sub", "exp"))
    else:
        assert response.status_code in (401, 403), (claims, response.text)


def test_a_deeply_nested_token_header_is_401_not_500(
    secured: SecuredServer, issuer: Issuer, anonymous: httpx.Client
) -> None:
    nested = b'{"alg":"RS256","kid":"rsa-1","x":' + b"[" * 4000 + b"]" * 4000 + b"}"
    token = ".".join([b64url(nested), b64url(b"{}"), "AA"])  # under 16 KB: it reaches parsing
    response = _get(anonymous, token)
    assert response.status_code == 401, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_token"
    assert "nested too deeply" in error["message"] or "larger than" in error["message"]
    shallow = b'{"alg":"RS256","kid":"rsa-1","x":' + b"[" * 300 + b"]" * 300 + b"}"
    response = _get(anonymous, ".".join([b64url(shallow), b64url(b"{}"), "AA"]))
    assert response.status_code == 401
    assert "nested too deeply" in response.json()["error"]["message"]
    assert _get(anonymous, issuer.token()).status_code == 200
    assert secured.running.wait_idle()


def test_a_token_valid_for_centuries_is_401(
    secured: SecuredServer, issuer: Issuer, anonymous: httpx.Client
) -> None:
    token = issuer.token(issuer.claims(exp=1_000_000_000_000, roles=["boss"]))
    response = _get(anonymous, token, "/v1/admin/keys")
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "invalid_token" and "valid for longer than" in error["message"]
    assert (
        _get(anonymous, issuer.token(issuer.claims(roles=["boss"])), "/v1/admin/keys").status_code
        == 200
    )
    assert secured.running.wait_idle()


def test_a_token_asking_for_priority_is_capped_at_zero(
    secured: SecuredServer, issuer: Issuer, anonymous: httpx.Client
) -> None:
    headers = {"Authorization": f"Bearer {issuer.token()}"}
    body = {"model": MODEL_NAME, "prompt": "Hello", "max_tokens": 2}
    refused = anonymous.post("/v1/completions", json={**body, "priority": 1}, headers=headers)
    assert refused.status_code == 403 and refused.json()["error"]["param"] == "priority"
    ok = anonymous.post("/v1/completions", json={**body, "priority": 0}, headers=headers)
    assert ok.status_code == 200
    assert secured.running.wait_idle()
