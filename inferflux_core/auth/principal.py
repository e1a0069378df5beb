"""Who is calling: the identity, scopes, model allow-list and limits of one request."""

from __future__ import annotations

from dataclasses import dataclass, field

from inferflux_core.auth.scopes import SCOPES
from inferflux_core.contracts import RateLimits
from inferflux_core.contracts.generation import MAX_PRIORITY
from inferflux_core.errors import PermissionDeniedError


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. ``key_id`` is safe to log: never the key itself."""

    key_id: str
    kind: str  # "api_key", "oidc" or "anonymous"
    scopes: frozenset[str]
    models: tuple[str, ...] = ()
    limits: RateLimits = field(default_factory=RateLimits)
    #: The limits set on the credential itself, not the defaults it falls back on: what
    #: bounds the limits of the keys it may grant.
    own_limits: RateLimits = field(default_factory=RateLimits)
    #: The highest request ``priority`` allowed; None: no cap.
    max_priority: int | None = 0
    #: When the credential expires (seconds since the epoch); None: never.
    expires_at: float | None = None
    #: The project the credential belongs to (docs/projects.md); None: it sees every model.
    project: str | None = None

    def require(self, scope: str) -> None:
        """403 unless the caller has ``scope``."""
        if scope not in self.scopes:
            raise PermissionDeniedError(
                f"this credential lacks the {scope!r} scope this route needs",
                code="insufficient_scope",
            )

    def may_use(self, model: str) -> bool:
        """Whether the model allow-list admits ``model`` (an empty list admits all)."""
        return not self.models or model in self.models

    def require_model(self, model: str) -> None:
        """403 unless the caller may use ``model``."""
        if not self.may_use(model):
            raise PermissionDeniedError(
                f"this credential may not use the model {model!r}",
                param="model",
                code="model_not_allowed",
            )

    def require_priority(self, priority: object) -> None:
        """403 if ``priority`` is above this caller's cap; lowering it is always allowed.

        Anything but an integer in range passes: the request model reports it.
        """
        cap = self.max_priority
        if cap is None or isinstance(priority, bool) or not isinstance(priority, int):
            return
        if abs(priority) > MAX_PRIORITY:
            return  # out of every range: the request model's 400 names it
        if priority > cap:
            shown = f"got {priority}" if abs(priority) <= 10**9 else "got a larger one"
            raise PermissionDeniedError(
                f"priority: this credential may ask for a priority of at most {cap} ({shown})",
                param="priority",
                code="priority_not_allowed",
            )


def anonymous(limits: RateLimits) -> Principal:
    """The caller when ``auth.mode`` is ``disabled``: every scope, shared limits, no cap."""
    return Principal("anonymous", "anonymous", frozenset(SCOPES), (), limits, max_priority=None)
