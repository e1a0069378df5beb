"""What an admin caller may grant: never more than it holds itself.

A key created or changed through the admin API must fit inside the credential that asks for
it: its scopes (from roles and scopes), its model allow-list, its rate limits (where the
caller's own credential sets one), its priority cap and its expiry. Otherwise the request is
refused with 403 ``exceeds_own_grants``, naming the field. ``inferflux admin`` acts on the
store as the operator and is not checked (its caller is None), nor is a server with
``auth.mode: disabled``.
"""

from __future__ import annotations

from collections.abc import Iterable

from inferflux_core.auth.principal import Principal
from inferflux_core.auth.scopes import resolve_scopes
from inferflux_core.contracts import ApiKeyRecord, Policy, RateLimits
from inferflux_core.errors import PermissionDeniedError

LIMIT_NAMES = ("requests_per_minute", "tokens_per_minute")


def wider(param: str, why: str) -> PermissionDeniedError:
    """The refusal of a grant beyond the caller's own."""
    return PermissionDeniedError(
        f"{param}: a credential cannot grant more than it holds: {why}",
        param=param,
        code="exceeds_own_grants",
    )


def check_key_within(caller: Principal | None, record: ApiKeyRecord, policy: Policy) -> None:
    """403 unless ``record`` (as stored in ``policy``) grants nothing ``caller`` lacks."""
    if caller is None:
        return
    granted = resolve_scopes(record.roles, record.scopes, policy.roles)
    missing = granted - caller.scopes
    if missing:
        param = "scopes" if missing & set(record.scopes) else "roles"
        raise wider(param, f"the key would have {_names(missing)}, which this credential lacks")
    _check_models(caller, record.models)
    if caller.project is not None and record.project != caller.project:
        raise wider(
            "project", f"the key must belong to this credential's project {caller.project!r}"
        )
    check_limits_within(caller, record.limits.over(policy.default_limits), prefix="limits.")
    cap = caller.max_priority
    if cap is not None and record.max_priority > cap:
        raise wider(
            "max_priority", f"it would be {record.max_priority}, this credential's is {cap}"
        )
    own = caller.expires_at
    if own is not None and (record.expires_at is None or record.expires_at > own):
        raise wider("expires_at", f"the key must expire no later than this credential ({own:.0f})")


def check_scopes_within(caller: Principal | None, scopes: Iterable[str]) -> None:
    """403 unless ``caller`` holds every scope in ``scopes`` (a custom role's)."""
    if caller is None:
        return
    missing = set(scopes) - caller.scopes
    if missing:
        raise wider("scopes", f"the role would have {_names(missing)}, which this credential lacks")


def check_limits_within(caller: Principal | None, limits: RateLimits, prefix: str = "") -> None:
    """403 unless each of ``limits`` is set and at most the caller's, where the caller's own
    credential sets one (a limit it only inherits from the defaults does not bound it)."""
    if caller is None:
        return
    for name in LIMIT_NAMES:
        own = getattr(caller.own_limits, name)
        new = getattr(limits, name)
        if own is not None and (new is None or new > own):
            shown = "no limit" if new is None else str(new)
            raise wider(f"{prefix}{name}", f"it would be {shown}, this credential's is {own}")


def _check_models(caller: Principal, models: tuple[str, ...]) -> None:
    if not caller.models:
        return
    if not models:
        raise wider(
            "models",
            f"the key would allow every model; this credential only {_list(caller.models)}",
        )
    outside = [m for m in models if m not in caller.models]
    if outside:
        raise wider("models", f"this credential may not use {_list(outside)}")


def _names(scopes: Iterable[str]) -> str:
    listed = sorted(scopes)
    return ("the scope " if len(listed) == 1 else "the scopes ") + ", ".join(map(repr, listed))


def _list(models: Iterable[str]) -> str:
    return ", ".join(repr(m[:64]) for m in list(models)[:8])
