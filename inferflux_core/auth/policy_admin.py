"""Managing the policy: keys, roles, limits, the whole document. One implementation, used by
the admin API, ``inferflux admin`` (on the store directly) and the development key.

Every change is one atomic :meth:`~inferflux_core.contracts.PolicyStore.update`, so it reaches
the next request of every server reading the store; a revoked key fails from then on.

Methods that grant take the ``caller``: the admin API passes the credential of the request,
and what it creates or changes must fit inside it (:mod:`inferflux_core.auth.grants`);
``inferflux admin`` passes None, the operator, who may grant anything.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from inferflux_core.auth.grants import check_key_within, check_limits_within, check_scopes_within
from inferflux_core.auth.keys import generate_key, hash_key
from inferflux_core.auth.principal import Principal
from inferflux_core.auth.scopes import BUILTIN_ROLES, SCOPES, all_roles
from inferflux_core.contracts import ApiKeyRecord, Policy, PolicyStore, RateLimits
from inferflux_core.contracts.policy import (
    KEY_ID_PATTERN,
    MAX_PRIORITY_CAP,
    PROJECT_NAME_PATTERN,
    ROLE_NAME_PATTERN,
)
from inferflux_core.errors import InvalidRequestError, NotFoundError
from inferflux_core.protocol.common import parse_body

#: The longest a key may be made to last: ``expires_at`` lies between now and this from now.
MAX_KEY_LIFETIME = 10 * 365 * 86_400


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class KeyCreate(_Body):
    """``POST /v1/admin/keys``."""

    name: str = Field(min_length=1, max_length=200)
    roles: list[str] = Field(default_factory=lambda: ["user"])
    scopes: list[str] = Field(default_factory=list)
    models: list[str] = Field(default_factory=list)
    expires_at: float | None = Field(None, description="seconds since the epoch")
    expires_in: float | None = Field(
        None, gt=0, le=MAX_KEY_LIFETIME, description="seconds from now"
    )
    limits: RateLimits = Field(default_factory=RateLimits)
    max_priority: int = Field(0, ge=0, le=MAX_PRIORITY_CAP)
    project: str | None = Field(
        None, pattern=PROJECT_NAME_PATTERN, description="the project the key belongs to"
    )


class KeyUpdate(_Body):
    """``PATCH /v1/admin/keys/{id}``: the fields given replace the stored ones."""

    name: str | None = Field(None, min_length=1, max_length=200)
    roles: list[str] | None = None
    scopes: list[str] | None = None
    models: list[str] | None = None
    expires_at: float | None = None
    limits: RateLimits | None = None
    max_priority: int | None = Field(None, ge=0, le=MAX_PRIORITY_CAP)
    project: str | None = Field(None, pattern=PROJECT_NAME_PATTERN)


class RoleBody(_Body):
    """``PUT /v1/admin/roles/{name}``."""

    scopes: list[str]


class PolicyAdmin:
    """The operations on a policy store; results are plain JSON-ready dicts."""

    def __init__(self, store: PolicyStore) -> None:
        self.store = store

    # -- keys ---------------------------------------------------------------------------------

    def create_key(self, spec: KeyCreate, caller: Principal | None = None) -> dict[str, Any]:
        """A new key: ``{"key": "ifx-...", ...record}``. The key is in no store, log or list."""
        key, key_id = generate_key()
        now = time.time()
        expires_at = spec.expires_at
        if spec.expires_in is not None:
            expires_at = now + spec.expires_in
        else:
            _check_expiry(expires_at, now)
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
            max_priority=spec.max_priority,
            project=spec.project,
        )

        def add(policy: Policy) -> Policy:
            _check_grants(record.roles, record.scopes, policy)
            check_key_within(caller, record, policy)
            return policy.with_key(record)

        self.store.update(add)
        return {"key": key, **record.public()}

    def list_keys(self) -> list[dict[str, Any]]:
        """Every key's record, without hashes."""
        return [record.public() for record in self.store.list_keys()]

    def get_key(self, key_id: str) -> dict[str, Any]:
        """One key's record; 404 if there is none."""
        return _record(self.store.read(), key_id).public()

    def update_key(
        self, key_id: str, changes: KeyUpdate, caller: Principal | None = None
    ) -> dict[str, Any]:
        """Replace the fields ``changes`` sets; effective from the next request."""
        fields = changes.model_dump(exclude_unset=True)
        if "expires_at" in fields:
            _check_expiry(fields["expires_at"], time.time())
        if fields.get("max_priority", 0) is None:
            fields["max_priority"] = 0
        for name in ("roles", "scopes", "models"):
            if name in fields:
                fields[name] = tuple(fields[name] or ())
        if "limits" in fields:
            fields["limits"] = RateLimits.model_validate(fields["limits"] or {})

        def change(policy: Policy) -> Policy:
            record = _record(policy, key_id).model_copy(update=fields)
            _check_grants(record.roles, record.scopes, policy)
            check_key_within(caller, record, policy)
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

    def set_role(
        self, name: str, body: RoleBody, caller: Principal | None = None
    ) -> dict[str, list[str]]:
        """Create or replace a custom role (with no scope ``caller`` lacks)."""
        _check_role_name(name)
        _check_scopes(body.scopes)
        check_scopes_within(caller, body.scopes)
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

    def set_limits(self, limits: RateLimits, caller: Principal | None = None) -> dict[str, Any]:
        """Replace the default limits (none looser than ``caller``'s); effective from the next
        request."""
        check_limits_within(caller, limits)
        return self.store.update(
            lambda p: p.with_default_limits(limits)
        ).default_limits.model_dump()

    def export(self) -> dict[str, Any]:
        """The whole policy, hashes included (never keys): for backups and ``import_policy``."""
        return self.store.read().model_dump(mode="json")

    def import_policy(self, document: Any, caller: Principal | None = None) -> dict[str, Any]:
        """Replace roles, limits and keys with ``document`` (as ``export`` wrote it); every
        role, key and default limit in it must fit inside ``caller``."""
        if not isinstance(document, dict):
            raise InvalidRequestError("the policy must be a JSON object")
        incoming = parse_body(Policy, {**document, "version": 0})
        for name, scopes in incoming.roles.items():
            _check_role_name(name)
            _check_scopes(scopes)
            check_scopes_within(caller, scopes)
        check_limits_within(caller, incoming.default_limits, prefix="default_limits.")
        for record in incoming.keys.values():
            _check_scopes(record.scopes)  # roles may name deleted ones: they grant nothing
            check_key_within(caller, record, incoming)
        stored = self.store.update(lambda p: incoming.model_copy(update={"version": p.version}))
        return {"version": stored.version, "keys": len(stored.keys), "roles": len(stored.roles)}


def _record(policy: Policy, key_id: str) -> ApiKeyRecord:
    record = policy.keys.get(key_id) if re.fullmatch(KEY_ID_PATTERN, key_id) else None
    if record is None:
        raise NotFoundError(f"there is no API key with id {key_id!r}")
    return record


def _check_expiry(expires_at: float | None, now: float) -> None:
    """400 unless ``expires_at`` is unset or a time from now to ten years on."""
    if expires_at is None:
        return
    if not (math.isfinite(expires_at) and now <= expires_at <= now + MAX_KEY_LIFETIME):
        raise InvalidRequestError(
            "expires_at: must be a time (seconds since the epoch) between now and ten years "
            "from now",
            param="expires_at",
        )


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
