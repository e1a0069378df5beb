"""Before serving: make sure someone can call the server, or refuse to start.

With ``auth.mode: keys`` a server whose policy store holds no usable key and that trusts no
OIDC issuer would answer 401 to everyone. On a loopback host, with a store that does not
persist (``memory``) and ``auth.dev_key`` on, the server makes an admin key for this run
(or takes the one in ``INFERFLUX_API_KEY``) and ``inferflux serve`` prints it once on stderr.
Anywhere else it refuses to start and says what to configure.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from inferflux_core.auth.access import AccessControl
from inferflux_core.auth.jwks import is_loopback
from inferflux_core.auth.keys import hash_key, parse_key_id
from inferflux_core.auth.policy_admin import KeyCreate, PolicyAdmin
from inferflux_core.contracts import ApiKeyRecord, Policy
from inferflux_core.contracts.policy import MAX_PRIORITY_CAP
from inferflux_core.errors import ConfigError

#: The variable ``inferctl`` reads its key from; ``inferflux serve`` adopts it as the dev key.
DEV_KEY_ENV = "INFERFLUX_API_KEY"
DEV_KEY_NAME = "development"


@dataclass(frozen=True, slots=True)
class DevKey:
    """The development key made for this run."""

    key: str
    key_id: str
    from_environment: bool


def prepare_access(access: AccessControl, host: str) -> DevKey | None:
    """Check that the server on ``host`` can be called; returns the development key if one
    was made (the caller prints it, once)."""
    settings = access.settings
    if not access.enabled:
        return None  # AccessControl has warned
    if _has_usable_key(access.store.read()) or settings.auth.oidc is not None:
        return None
    if is_loopback(host) and settings.auth.dev_key and not access.store.persistent:
        return _make_dev_key(access, os.environ.get(DEV_KEY_ENV))
    raise ConfigError(
        "auth is on (auth.mode: keys) but nobody could call this server: the policy store "
        "holds no usable API key and no OIDC issuer is configured. Create a key in a "
        "persistent store (policy.store: encrypted_file, then `inferflux admin keys create`), "
        "configure auth.oidc, or set auth.mode: disabled to serve without credentials"
        + (
            ""
            if is_loopback(host)
            else f" (a development key is only made on loopback, not {host})"
        )
    )


def _has_usable_key(policy: Policy) -> bool:
    now = time.time()
    return any(
        not r.revoked and (r.expires_at is None or r.expires_at > now) for r in policy.keys.values()
    )


def _make_dev_key(access: AccessControl, given: str | None) -> DevKey:
    if not given:
        created = PolicyAdmin(access.store).create_key(
            KeyCreate(name=DEV_KEY_NAME, roles=["admin"], max_priority=MAX_PRIORITY_CAP)
        )
        return DevKey(created["key"], created["id"], from_environment=False)
    key_id = parse_key_id(given)
    if key_id is None:
        raise ConfigError(
            f"{DEV_KEY_ENV} is not an inferflux API key (ifx-<16 hex digits>.<43 characters>); "
            "unset it and the server makes and prints one"
        )
    record = ApiKeyRecord(
        key_id=key_id,
        name=DEV_KEY_NAME,
        key_hash=hash_key(given),
        roles=("admin",),
        created_at=time.time(),
        max_priority=MAX_PRIORITY_CAP,
    )
    access.store.put_key(record)
    return DevKey(given, key_id, from_environment=True)
