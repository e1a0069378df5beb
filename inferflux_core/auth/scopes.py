"""Scopes, the built-in roles, and which scope a route needs.

A resource declares the scope each method needs as ``scopes = {"POST": INFERENCE}``; a
resource that declares nothing (a plugin's route, say) needs :data:`ADMIN` for every method.
Public routes are not declared here: they are one exact list in :mod:`inferflux_core.auth.paths`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from inferflux_core.contracts import Policy

INFERENCE = "inference"
MODELS_READ = "models:read"
MODELS_WRITE = "models:write"
METRICS_READ = "metrics:read"
ADMIN = "admin"

#: Every scope there is, in the order the docs list them.
SCOPES: tuple[str, ...] = (INFERENCE, MODELS_READ, MODELS_WRITE, METRICS_READ, ADMIN)

#: Roles every policy has; custom roles in the policy add to these and cannot replace them.
BUILTIN_ROLES: Mapping[str, tuple[str, ...]] = {
    "admin": SCOPES,
    "user": (INFERENCE, MODELS_READ),
    "operator": (MODELS_READ, MODELS_WRITE, METRICS_READ),
    "monitor": (METRICS_READ,),
}


def all_roles(custom: Mapping[str, Iterable[str]]) -> dict[str, tuple[str, ...]]:
    """Built-in roles plus the policy's custom ones."""
    return {**{k: tuple(v) for k, v in custom.items()}, **BUILTIN_ROLES}


def admin_roles(policy: Policy) -> frozenset[str]:
    """The roles, built-in and the policy's, that grant :data:`ADMIN`."""
    return frozenset(name for name, scopes in all_roles(policy.roles).items() if ADMIN in scopes)


def resolve_scopes(
    roles: Iterable[str], scopes: Iterable[str], custom_roles: Mapping[str, Iterable[str]]
) -> frozenset[str]:
    """The scopes a holder of ``roles`` and ``scopes`` has (unknown roles grant nothing)."""
    granted = set(scopes)
    for role in roles:
        granted.update(BUILTIN_ROLES.get(role) or custom_roles.get(role) or ())
    return frozenset(granted & set(SCOPES))


def required_scope(resource: object, method: str) -> str | None:
    """The scope ``method`` on ``resource`` needs; None for a method it does not serve.

    A method the resource does not declare reaches falcon's own 405 (or its default
    ``OPTIONS`` answer), which reveals nothing; the caller is still authenticated first.
    """
    declared = getattr(resource, "scopes", None)
    if declared is None:
        return ADMIN
    return cast("str | None", declared.get(method))


def websocket_scope(resource: object) -> str:
    """The scope a websocket on ``resource`` needs: its ``scopes["WEBSOCKET"]``, else
    :data:`ADMIN` (a websocket is never open to a scope declared for HTTP methods)."""
    declared = getattr(resource, "scopes", None) or {}
    return cast("str", declared.get("WEBSOCKET", ADMIN))
