"""OIDC bearer tokens: real PyJWT, real keys, a JWKS served on loopback; every known attack."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inferflux_core.auth.access import AccessControl
from inferflux_core.auth.jwks import JwksCache
from inferflux_core.auth.oidc import OidcVerifier
from inferflux_core.config import OidcConfig, Settings
from inferflux_core.contracts import Policy
from inferflux_core.errors import AuthenticationError, ConfigError
from inferflux_plugins.policy.memory import MemoryPolicyStore
from tests.fakes import Issuer, b64url


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    local = Issuer()
    yield local
    local.close()


def _verifier(issuer: Issuer, **config: Any) -> OidcVerifier:
    options = {"issuer": issuer.issuer, "audience": issuer.audience, "jwks_url": issuer.jwks_url}
    return OidcVerifier(OidcConfig.model_validate({**options, **config}))


@pytest.fixture(scope="module")
def verifier(issuer: Issuer) -> OidcVerifier:
    return _verifier(issuer)


def _verify(verifier: OidcVerifier, token: str) -> dict[str, Any]:
    return asyncio.run(verifier.verify(token))


def _refused(verifier: OidcVerifier, token: str, reason: str) -> None:
    with pytest.raises(AuthenticationError, match=reason) as caught:
        _verify(verifier, token)
    assert caught.value.status == 401 and caught.value.code == "invalid_token"
    assert token not in caught.value.message


def _signed(issuer: Issuer, claims: Any, headers: dict[str, Any]) -> str:
    """Signed with the issuer's RSA key, whatever the claims hold (PyJWT's encoder checks)."""
    payload = json.dumps(claims).encode()
    return jwt.api_jws.encode(payload, issuer.rsa_key, algorithm="RS256", headers=headers)


def _unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    parts = (json.dumps(header).encode(), json.dumps(claims).encode())
    return ".".join([*(b64url(p) for p in parts), b64url(signature) or "AA"])


def test_valid_rs256_and_es256_tokens_verify(issuer: Issuer, verifier: OidcVerifier) -> None:
    assert _verify(verifier, issuer.token())["sub"] == "alice"
    assert _verify(verifier, issuer.token(kid="ec-1"))["sub"] == "alice"


def test_alg_none_is_refused(issuer: Issuer, verifier: OidcVerifier) -> None:
    for alg in ("none", "None", "NONE"):
        token = _unsigned({"alg": alg, "kid": "rsa-1", "typ": "JWT"}, issuer.claims())
        _refused(verifier, token, "algorithm")
    _refused(verifier, _unsigned({"kid": "rsa-1"}, issuer.claims()), "algorithm")


def test_hs256_signed_with_the_public_key_is_refused(
    issuer: Issuer, verifier: OidcVerifier
) -> None:
    public_pem = issuer.rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "kid": "rsa-1", "typ": "JWT"}
    signing_input = ".".join(b64url(json.dumps(p).encode()) for p in (header, issuer.claims()))
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    _refused(verifier, f"{signing_input}.{b64url(signature)}", "algorithm 'HS256'")
    jwk_json = json.dumps(issuer.keys["rsa-1"]).encode()
    signature = hmac.new(jwk_json, signing_input.encode(), hashlib.sha256).digest()
    _refused(verifier, f"{signing_input}.{b64url(signature)}", "algorithm")


@pytest.mark.parametrize("suffix", ["x", "/", "/../other", ".evil.example"])
def test_an_issuer_that_merely_contains_ours_is_refused(
    issuer: Issuer, verifier: OidcVerifier, suffix: str
) -> None:
    _refused(verifier, issuer.token(issuer.claims(iss=issuer.issuer + suffix)), "another issuer")
    _refused(verifier, issuer.token(issuer.claims(iss=issuer.issuer[:-1])), "another issuer")
    as_list = _signed(issuer, issuer.claims(iss=[issuer.issuer]), {"kid": "rsa-1"})
    _refused(verifier, as_list, "another issuer|malformed")


def test_wrong_audience_expired_and_not_yet_valid_are_refused(
    issuer: Issuer, verifier: OidcVerifier
) -> None:
    now = int(time.time())
    _refused(verifier, issuer.token(issuer.claims(aud="someone-else")), "not meant for this")
    _refused(verifier, issuer.token(issuer.claims(aud=issuer.audience + "x")), "not meant")
    _refused(verifier, issuer.token(issuer.claims(exp=now - 3600)), "expired")
    _refused(verifier, issuer.token(issuer.claims(nbf=now + 3600)), "not valid yet")
    _refused(verifier, issuer.token(issuer.claims(exp=None)), "'exp'")
    _refused(verifier, issuer.token(issuer.claims(sub=None)), "'sub'")


def test_a_signature_by_another_key_is_refused(issuer: Issuer, verifier: OidcVerifier) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _refused(verifier, issuer.token(key=stranger), "signature does not verify")
    other_curve = ec.generate_private_key(ec.SECP256R1())
    _refused(verifier, issuer.token(kid="ec-1", key=other_curve), "signature")


def test_an_unknown_kid_is_refused_and_refreshes_at_most_once_per_interval(
    issuer: Issuer,
) -> None:
    verifier = _verifier(issuer, jwks_min_refresh_seconds=60)
    _verify(verifier, issuer.token())
    fetches = issuer.jwks_fetches
    for kid in ("nope-1", "nope-2", "nope-3"):
        _refused(verifier, issuer.token(kid=kid), "not one of the issuer's keys")
    assert issuer.jwks_fetches == fetches, "unknown kids within the interval fetched again"
    _refused(verifier, issuer.token(headers={"kid": ""}), "no key id")


def test_a_key_added_by_the_issuer_is_picked_up_on_its_first_use(issuer: Issuer) -> None:
    verifier = _verifier(issuer, jwks_min_refresh_seconds=0)
    _verify(verifier, issuer.token())
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    issuer.keys["rsa-2"] = Issuer._jwk(new_key, "rsa-2", "RS256")
    try:
        assert _verify(verifier, issuer.token(kid="rsa-2", key=new_key))["sub"] == "alice"
    finally:
        del issuer.keys["rsa-2"]


def test_the_jwks_is_cached_for_its_ttl() -> None:
    now = [1000.0]
    cache = JwksCache(
        issuer="https://idp.example",
        jwks_url=None,
        ttl=300,
        min_refresh=30,
        timeout=1,
        clock=lambda: now[0],
    )
    calls: list[float] = []

    async def fetch() -> dict[str, dict[str, Any]]:
        calls.append(now[0])
        return {"k": {"kid": "k"}}

    cache._fetch_keys = fetch  # type: ignore[method-assign]
    assert asyncio.run(cache.get("k")) == {"kid": "k"}
    now[0] += 299
    asyncio.run(cache.get("k"))
    assert len(calls) == 1
    now[0] += 2
    asyncio.run(cache.get("k"))
    assert len(calls) == 2


@pytest.mark.parametrize(
    "extra",
    [
        {"jku": "http://127.0.0.1:1/evil-jwks"},
        {"x5u": "http://127.0.0.1:1/evil-cert"},
        {"x5c": ["MIIB"]},
        {"jwk": {"kty": "oct", "k": "AAAA"}},
        {"crit": ["exp"]},
        {"crit": ["b64"], "b64": False},
    ],
)
def test_headers_pointing_elsewhere_or_critical_are_refused(
    issuer: Issuer, verifier: OidcVerifier, extra: dict[str, Any]
) -> None:
    fetches = issuer.jwks_fetches
    _refused(verifier, issuer.token(headers=extra), "is not accepted|not a JWT")
    assert issuer.jwks_fetches <= fetches + 1


def test_a_token_over_16_kb_is_refused_before_any_crypto(
    issuer: Issuer, verifier: OidcVerifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = issuer.token(issuer.claims(padding="x" * 17_000))

    def no_crypto(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded a token over the size limit")

    monkeypatch.setattr(jwt, "decode", no_crypto)
    _refused(verifier, token, "larger than 16384")


def test_a_jwk_whose_alg_or_type_differs_from_the_token_is_refused(issuer: Issuer) -> None:
    issuer.keys["rsa-384"] = {**issuer.keys["rsa-1"], "kid": "rsa-384", "alg": "RS384"}
    issuer.keys["rsa-as-ec"] = {**issuer.keys["rsa-1"], "kid": "rsa-as-ec"}
    issuer.keys["enc"] = {**issuer.keys["rsa-1"], "kid": "enc", "use": "enc"}
    try:
        verifier = _verifier(issuer)
        _refused(verifier, issuer.token(kid="rsa-384"), "another algorithm")
        token = issuer.token(kid="rsa-as-ec", algorithm="ES256", key=issuer.ec_key)
        _refused(verifier, token, "does not match the issuer's key")
        _refused(verifier, issuer.token(kid="enc"), "not a signing key")
    finally:
        for kid in ("rsa-384", "rsa-as-ec", "enc"):
            del issuer.keys[kid]


def test_the_configured_algorithms_narrow_the_fixed_list(issuer: Issuer) -> None:
    verifier = _verifier(issuer, algorithms=["ES256"])
    _refused(verifier, issuer.token(), "algorithm 'RS256' is not accepted")
    assert _verify(verifier, issuer.token(kid="ec-1"))
    with pytest.raises(ValueError):
        OidcConfig(issuer="x", audience="y", algorithms=["HS256"])  # type: ignore[list-item]


def test_roles_come_from_the_configured_claim(issuer: Issuer) -> None:
    direct = _verifier(issuer, roles_claim="realm_access.roles")
    assert direct.roles({"realm_access": {"roles": ["user", 3, "operator"]}}) == [
        "user",
        "operator",
    ]
    mapped = _verifier(issuer, roles_claim="scope", role_map={"llm": ["user"], "ops": ["operator"]})
    assert mapped.roles({"scope": "openid llm ops"}) == ["user", "operator"]
    assert mapped.roles({"scope": 7}) == []


def test_plain_http_jwks_is_refused_unless_on_loopback() -> None:
    with pytest.raises(ConfigError, match="https"):
        OidcVerifier(OidcConfig(issuer="http://idp.example", audience="a"))
    OidcVerifier(OidcConfig(issuer="https://idp.example", audience="a"))


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    claims=st.dictionaries(
        st.sampled_from(["iss", "aud", "sub", "exp", "nbf", "iat", "roles", "jti", "x"]),
        _json_values,
        max_size=9,
    ),
    header=st.dictionaries(
        st.sampled_from(["alg", "kid", "typ", "crit", "jku", "cty", "b64"]),
        _json_values,
        max_size=4,
    ),
)
def test_fuzzed_claims_and_headers_are_only_ever_refused_with_401(
    issuer: Issuer, verifier: OidcVerifier, claims: dict[str, Any], header: dict[str, Any]
) -> None:
    try:
        token = _signed(issuer, claims, {"kid": "rsa-1", **header})
    except (TypeError, ValueError, NotImplementedError, jwt.PyJWTError):
        token = _unsigned({"alg": "RS256", "kid": "rsa-1", **header}, claims)
    try:
        verified = _verify(verifier, token)
    except AuthenticationError as exc:
        assert exc.status == 401
    else:  # only a token a real issuer could have made gets through
        assert verified["iss"] == issuer.issuer and verified["exp"] > time.time() - 60


def test_without_a_role_map_a_claimed_admin_role_grants_nothing(issuer: Issuer) -> None:
    direct = _verifier(issuer)
    assert direct.roles({"roles": ["admin", "user"]}) == ["user"]
    assert direct.roles({"roles": "root user"}, privileged={"admin", "root"}) == ["user"]
    mapped = _verifier(issuer, role_map={"idp-admins": ["admin"]})
    assert mapped.roles({"roles": ["admin", "idp-admins"]}) == ["admin"]


def _deep(depth: int) -> str:
    header = b'{"alg":"RS256","kid":"rsa-1","x":' + b"[" * depth + b"]" * depth + b"}"
    return ".".join([b64url(header), b64url(b"{}"), "AA"])


@pytest.mark.parametrize("depth", [3, 100, 5000])
def test_a_nested_or_large_header_is_refused_before_it_is_parsed(
    verifier: OidcVerifier, depth: int
) -> None:
    _refused(verifier, _deep(depth), "nested too deeply|larger than 2048")


def test_a_header_with_brackets_inside_strings_is_not_nested(
    issuer: Issuer, verifier: OidcVerifier
) -> None:
    token = issuer.token(headers={"typ": '[[[{{{JWT\\"[['})
    assert _verify(verifier, token)["sub"] == "alice"
    _refused(verifier, issuer.token(headers={"typ": "x" * 3000}), "larger than 2048")


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"exp": 995_000_000_000}, "longer than 86400 s \\(exp\\)"),  # the year 33000
        ({"exp": int(time.time()) + 86_400 * 2}, "longer than 86400 s"),
        ({"iat": 0}, "longer than 86400 s \\(exp - iat\\)"),
        ({"iat": None, "nbf": 1}, "longer than 86400 s \\(exp - iat\\)"),
        ({"iat": int(time.time()) + 3600}, "not valid yet"),
        ({"nbf": 10**15}, "not valid yet"),
        ({"iat": "now"}, "not a time|malformed"),
        ({"exp": 1e400}, "malformed|not a time"),
        ({"exp": True}, "not a time|malformed|expired"),
    ],
)
def test_absurd_token_times_are_refused(
    issuer: Issuer, verifier: OidcVerifier, claims: dict[str, Any], reason: str
) -> None:
    _refused(verifier, _signed(issuer, issuer.claims(**claims), {"kid": "rsa-1"}), reason)
    assert _verify(verifier, issuer.token())["sub"] == "alice"


def test_the_longest_token_lifetime_is_configurable(issuer: Issuer) -> None:
    week = 7 * 86_400
    token = issuer.token(issuer.claims(exp=int(time.time()) + week - 60))
    _refused(_verifier(issuer), token, "longer than 86400 s")
    assert _verify(_verifier(issuer, max_token_lifetime_seconds=week), token)["sub"] == "alice"


def test_a_server_without_a_role_map_never_makes_a_token_an_admin(issuer: Issuer) -> None:
    oidc = {"issuer": issuer.issuer, "audience": issuer.audience, "jwks_url": issuer.jwks_url}
    settings = Settings.model_validate({"auth": {"oidc": oidc}})
    store = MemoryPolicyStore()
    store.update(
        lambda p: p.with_role("superusers", ["admin"]).with_role("readers", ["models:read"])
    )
    access = AccessControl(settings, store, verifier=OidcVerifier(settings.auth.oidc))  # type: ignore[arg-type]

    def scopes(*roles: str) -> frozenset[str]:
        token = issuer.token(issuer.claims(roles=list(roles)))
        return asyncio.run(access.authenticate(f"Bearer {token}")).scopes

    assert scopes("admin") == frozenset()
    assert scopes("superusers", "readers") == {"models:read"}
    assert scopes("admin", "user") == {"inference", "models:read"}
    principal = asyncio.run(access.authenticate(f"Bearer {issuer.token()}"))
    assert principal.max_priority == 0 and principal.kind == "oidc"
    assert isinstance(store.read(), Policy)
