"""API keys: format, hashing, and a constant-time check whatever the key."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from inferflux_core.auth import keys
from inferflux_core.auth.keys import generate_key, hash_key, key_matches, parse_key_id
from inferflux_core.auth.principal import Principal
from inferflux_core.auth.scopes import BUILTIN_ROLES, SCOPES, required_scope, resolve_scopes
from inferflux_core.contracts import ApiKeyRecord
from inferflux_core.errors import PermissionDeniedError


def _record(key: str, key_id: str) -> ApiKeyRecord:
    return ApiKeyRecord(key_id=key_id, name="n", key_hash=hash_key(key))


def test_generated_keys_are_unique_well_formed_and_hashed_with_sha256() -> None:
    made = [generate_key() for _ in range(50)]
    assert len({key for key, _ in made}) == 50
    for key, key_id in made:
        assert parse_key_id(key) == key_id
        assert hash_key(key) == "sha256:" + hashlib.sha256(key.encode()).hexdigest()


@pytest.mark.parametrize(
    "text", ["", "ifx-", "ifx-0123.abc", "ifx-0123456789ABCDEF." + "a" * 43, "xfx-" + "0" * 16]
)
def test_malformed_keys_have_no_id(text: str) -> None:
    assert parse_key_id(text) is None


def test_the_check_compares_digests_in_constant_time_even_without_a_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(keys.hmac, "compare_digest", spy)
    key, key_id = generate_key()
    record = _record(key, key_id)
    assert key_matches(key, record)
    assert not key_matches(key[:-1] + ("B" if key.endswith("A") else "A"), record)
    assert not key_matches(key, None)
    assert len(calls) == 3


def test_scopes_come_from_roles_and_unknown_ones_grant_nothing() -> None:
    assert resolve_scopes(["admin"], [], {}) == frozenset(SCOPES)
    assert resolve_scopes(["user"], [], {}) == frozenset(BUILTIN_ROLES["user"])
    assert resolve_scopes(["ghost"], ["made-up", "inference"], {}) == {"inference"}
    assert resolve_scopes(["reader"], [], {"reader": ["models:read"]}) == {"models:read"}
    # a custom role cannot widen a built-in one
    assert resolve_scopes(["user"], [], {"user": ["admin"]}) == frozenset(BUILTIN_ROLES["user"])


def test_a_resource_without_declared_scopes_needs_admin() -> None:
    class PluginRoute:
        pass

    class Declared:
        scopes = {"GET": "models:read"}

    assert required_scope(PluginRoute(), "GET") == "admin"
    assert required_scope(Declared(), "GET") == "models:read"
    assert required_scope(Declared(), "POST") is None


def test_a_principal_refuses_missing_scopes_and_models() -> None:
    principal = Principal("k", "api_key", frozenset({"inference"}), models=("a",))
    principal.require("inference")
    with pytest.raises(PermissionDeniedError, match="'admin'"):
        principal.require("admin")
    with pytest.raises(PermissionDeniedError) as caught:
        principal.require_model("b")
    assert caught.value.code == "model_not_allowed"
