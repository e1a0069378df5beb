"""Our own metrics beside vLLM's: HTTP requests, refusals at the door, and model lifecycle.

Label values are bounded: a route is the route template (``/v1/models/{model_id}``, never the
path a client sent; ``unmatched`` for a path no route has), a method one of HTTP's, a reason
one of our error codes.
"""

from __future__ import annotations

import contextlib
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge

#: The states a model is in (``inferflux_model_state``): one is 1, the others 0.
MODEL_STATES: Final = ("registered", "loading", "ready", "failed", "unloading")
#: The route label of a request whose path matches no route.
UNMATCHED_ROUTE: Final = "unmatched"
#: Methods counted by name; any other is ``other``.
HTTP_METHODS: Final = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "WEBSOCKET"}
)
#: The error codes of refused authentication (401) and authorization (403); others count as
#: ``other``.
AUTH_REASONS: Final = frozenset(
    {
        "missing_credentials",
        "invalid_api_key",
        "invalid_token",
        "oidc_unavailable",
        "insufficient_scope",
        "model_not_allowed",
        "priority_not_allowed",
        "exceeds_own_grants",
    }
)


class ServiceMetrics:
    """HTTP requests by route and status, rate-limit refusals, guardrail blocks, auth failures,
    and each model's state and load time."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.http_requests = Counter(
            "inferflux_http_requests",
            "HTTP requests answered, by route template, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.rate_limited = Counter(
            "inferflux_rate_limit_refusals",
            "Requests refused because the key's rate limit was spent (429), by route template",
            ["route"],
            registry=r,
        )
        self.guardrail_blocks = Counter(
            "inferflux_guardrail_blocks",
            "Requests a guardrail blocked: the prompt (stage input) or the output (stage output)",
            ["stage"],
            registry=r,
        )
        self.auth_failures = Counter(
            "inferflux_auth_failures",
            "Requests refused by authentication (401) or authorization (403), by error code",
            ["reason"],
            registry=r,
        )
        self.load_seconds = Gauge(
            "inferflux_model_load_seconds",
            "Seconds the model's last load took",
            ["model_name"],
            registry=r,
        )
        self.state = Gauge(
            "inferflux_model_state",
            f"1 for the state the model is in ({', '.join(MODEL_STATES)}), 0 for the others",
            ["model_name", "state"],
            registry=r,
        )

    def http_request(self, route: str | None, method: str, status: int) -> None:
        """Count one answered request (``route``: its template; None: no route matched)."""
        method = method if method in HTTP_METHODS else "other"
        self.http_requests.labels(route or UNMATCHED_ROUTE, method, str(status)).inc()

    def auth_failure(self, code: str | None) -> None:
        """Count a 401/403 refusal with its error code."""
        self.auth_failures.labels(code if code in AUTH_REASONS else "other").inc()

    def model_state(self, model_name: str, state: str) -> None:
        """Set ``model_name``'s state (one of :data:`MODEL_STATES`)."""
        if state not in MODEL_STATES:
            raise ValueError(f"unknown model state {state!r}; one of {', '.join(MODEL_STATES)}")
        for each in MODEL_STATES:
            self.state.labels(model_name, each).set(1.0 if each == state else 0.0)

    def forget(self, model_name: str) -> None:
        """Drop the state and load time of a model that is gone."""
        for each in MODEL_STATES:
            self._remove(self.state, model_name, each)
        self._remove(self.load_seconds, model_name)

    @staticmethod
    def _remove(gauge: Gauge, *labels: str) -> None:
        with contextlib.suppress(KeyError):
            gauge.remove(*labels)
