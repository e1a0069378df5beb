"""Managing the policy: keys, roles, limits, the whole document. One implementation, used by
the admin API, ``inferflux admin`` (on the store directly) and the development key.

Every change is one atomic :meth:`~inferflux_core.contracts.PolicyStore.update`, so it reaches
the next request of every server reading the store; a revoked key fails from then on.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from inferflux_core.auth.keys import generate_key, hash_key
from inferflux_core.auth.scopes import BUILTIN_ROLES, SCOPES, all_roles
from inferflux_core.contracts import ApiKeyRecord, Policy, PolicyStore, RateLimits
from inferflux_core.contracts.policy import KEY_ID_PATTERN, ROLE_NAME_PATTERN
from inferflux_core.errors import InvalidRequestError, NotFoundError
from inferflux_core.protocol.common import parse_body


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KeyCreate(_Body):
    """``POST /v1/admin/keys``."""

    name: str = Field(min_length=1, max_length=200)
    roles: list[str] = Field(default_factory=lambda: ["user"])
    scopes: list[str] = Field(default_factory=list)
    models: list[str] = Field(default_factory=list)
    expires_at: float | None = Field(None, description="seconds since the epoch")
    expires_in: float | None = Field(None, gt=0, description="seconds from now")
    limits: RateLimits = Field(default_factory=RateLimits)


class KeyUpdate(_Body):
    """``PATCH /v1/admin/keys/{id}``: the fields given replace the stored ones."""

    name: str | None = Field(None, min_length=1, max_length=200)
    roles: list[str] | None = None
    scopes: list[str] | None = None
    models: list[str] | None = None
    expires_at: float | None = None
    limits: RateLimits | None = None


class RoleBody(_Body):
    """``PUT /v1/admin/roles/{name}``."""

    scopes: list[str]


class PolicyAdmin:
    """The operations on a policy store; results are plain JSON-ready dicts."""

    def __init__(self, store: PolicyStore) -> None:
        self.store = store

    # -- keys ---------------------------------------------------------------------------------

    def create_key(self, spec: KeyCreate) -> dict[str, Any]:
        """A new key: ``{"key": "ifx-...", ...record}``. The key is in no store, log or list."""
        key, key_id = generate_key()
        now = time.time()
        expires_at = spec.expires_at
        if spec.expires_in is not None:
            expires_at = now + spec.expires_in
        record = ApiKeyRecord(
            key_id=key_id,
            name=spec.name,
            key_hash=hash_key(key),
            roles=tuple(spec.roles),
            scopes=tuple(spec.scopes),
            models=tuple(spec.models),
            created_at=now,
            expires_at=expires_at,
            limits=spec.limits,
        )

        def add(policy: Policy) -> Policy:
            _check_grants(record.roles, record.scopes, policy)
            return policy.with_key(record)

        self.store.update(add)
        return {"key": key, **record.public()}

    def list_keys(self) -> list[dict[str, Any]]:
        """Every key's record, without hashes."""
        return [record.public() for record in self.store.list_keys()]

    def get_key(self, key_id: str) -> dict[str, Any]:
        """One key's record; 404 if there is none."""
        return _record(self.store.read(), key_id).public()

    def update_key(self, key_id: str, changes: KeyUpdate) -> dict[str, Any]:
        """Replace the fields ``changes`` sets; effective from the next request."""
        fields = changes.model_dump(exclude_unset=True)
        for name in ("roles", "scopes", "models"):
            if name in fields:
                fields[name] = tuple(fields[name])
        if "limits" in fields:
            fields["limits"] = RateLimits.model_validate(fields["limits"] or {})

        def change(policy: Policy) -> Policy:
            record = _record(policy, key_id).model_copy(update=fields)
            _check_grants(record.roles, record.scopes, policy)
            return policy.with_key(record)

        return self.store.update(change).keys[key_id].public()

    def revoke_key(self, key_id: str) -> dict[str, Any]:
        """Revoke a key; its next request gets 401. Revoking twice keeps the first time."""

        def revoke(policy: Policy) -> Policy:
            record = _record(policy, key_id)
            if record.revoked:
                return policy
            return policy.with_key(
                record.model_copy(update={"revoked": True, "revoked_at": time.time()})
            )

        return self.store.update(revoke).keys[key_id].public()

    # -- roles, limits, the whole policy ------------------------------------------------------

    def roles(self) -> dict[str, list[str]]:
        """Every role (built-in and custom) and its scopes."""
        return {
            name: list(scopes)
            for name, scopes in sorted(all_roles(self.store.read().roles).items())
        }

    def set_role(self, name: str, body: RoleBody) -> dict[str, list[str]]:
        """Create or replace a custom role."""
        _check_role_name(name)
        _check_scopes(body.scopes)
        self.store.update(lambda policy: policy.with_role(name, body.scopes))
        return {name: list(body.scopes)}

    def delete_role(self, name: str) -> None:
        """Remove a custom role; keys that name it lose its scopes."""
        _check_role_name(name)

        def delete(policy: Policy) -> Policy:
            if name not in policy.roles:
                raise NotFoundError(f"there is no custom role {name!r}")
            return policy.with_role(name, None)

        self.store.update(delete)

    def limits(self) -> dict[str, Any]:
        """The default limits stored in the policy."""
        return self.store.read().default_limits.model_dump()

    def set_limits(self, limits: RateLimits) -> dict[str, Any]:
        """Replace the default limits; effective from the next request."""
        return self.store.update(
            lambda p: p.with_default_limits(limits)
        ).default_limits.model_dump()

    def export(self) -> dict[str, Any]:
        """The whole policy, hashes included (never keys): for backups and ``import_policy``."""
        return self.store.read().model_dump(mode="json")

    def import_policy(self, document: Any) -> dict[str, Any]:
        """Replace roles, limits and keys with ``document`` (as ``export`` wrote it)."""
        if not isinstance(document, dict):
            raise InvalidRequestError("the policy must be a JSON object")
        incoming = parse_body(Policy, {**document, "version": 0})
        for name, scopes in incoming.roles.items():
            _check_role_name(name)
            _check_scopes(scopes)
        for record in incoming.keys.values():
            _check_scopes(record.scopes)  # roles may name deleted ones: they grant nothing
        stored = self.store.update(lambda p: incoming.model_copy(update={"version": p.version}))
        return {"version": stored.version, "keys": len(stored.keys), "roles": len(stored.roles)}


def _record(policy: Policy, key_id: str) -> ApiKeyRecord:
    record = policy.keys.get(key_id) if re.fullmatch(KEY_ID_PATTERN, key_id) else None
    if record is None:
        raise NotFoundError(f"there is no API key with id {key_id!r}")
    return record


def _check_grants(roles: Iterable[str], scopes: Iterable[str], policy: Policy) -> None:
    known = all_roles(policy.roles)
    for role in roles:
        if role not in known:
            raise InvalidRequestError(
                f"roles: unknown role {role!r} (known: {', '.join(sorted(known))})", param="roles"
            )
    _check_scopes(scopes)


def _check_scopes(scopes: Iterable[str]) -> None:
    for scope in scopes:
        if scope not in SCOPES:
            raise InvalidRequestError(
                f"scopes: unknown scope {scope!r} (known: {', '.join(SCOPES)})", param="scopes"
            )


def _check_role_name(name: str) -> None:
    if name in BUILTIN_ROLES:
        raise InvalidRequestError(f"the built-in role {name!r} cannot be changed", param="name")
    if not re.fullmatch(ROLE_NAME_PATTERN, name):
        raise InvalidRequestError(
            f"a role name is lowercase letters, digits and _.:- (got {name[:64]!r})", param="name"
        )
