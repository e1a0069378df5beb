"""The falcon middleware that counts every answered HTTP request for ``/metrics``: by route
template, method and status, and the refusals at the door (rate limits, guardrails,
authentication and authorization), read from the error code the request ended with."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import falcon.asgi

from inferflux_core.api.exchange import Exchange
from inferflux_core.metrics.service import AUTH_REASONS, ServiceMetrics

BLOCKED = "content_blocked"


class MetricsMiddleware:
    """Counts each response once it is ready (a stream's guardrail block once it ends).

    It runs after the access middleware's ``process_response`` (falcon runs them in reverse),
    so the request's record (:class:`~inferflux_core.api.exchange.Exchange`) is complete.
    """

    def __init__(self, metrics: ServiceMetrics) -> None:
        self._m = metrics
        self._app: falcon.asgi.App[Any, Any] | None = None

    def bind(self, app: falcon.asgi.App[Any, Any]) -> None:
        """Find route templates with ``app``'s router (for a request refused before routing)."""
        self._app = app

    def route_of(self, req: falcon.asgi.Request) -> str | None:
        """The route template ``req`` matches (None: no route does), never the raw path."""
        if req.uri_template:
            return str(req.uri_template)
        found = self._app._router.find(req.path) if self._app is not None else None
        return str(found[3]) if found else None

    async def process_response(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, resource: Any, ok: bool
    ) -> None:
        """Count the request, and what refused it."""
        route = self.route_of(req)
        status = resp.status_code
        self._m.http_request(route, req.method, status)
        exchange: Exchange | None = req.context.get("exchange")
        code = req.context.get("error_code")
        if status in (401, 403) and (
            code in AUTH_REASONS or exchange is None or exchange.principal is None
        ):
            self._m.auth_failure(code)
        if code == "rate_limit_exceeded":
            self._m.rate_limited.labels(route or "unmatched").inc()
        if code == BLOCKED:
            stage = exchange.blocked if exchange is not None else None
            self._m.guardrail_blocks.labels(stage or "output").inc()
        elif resp.sse is not None and exchange is not None and status < 400:
            resp.sse = self._count_block_after(resp.sse, exchange)

    async def _count_block_after(
        self, events: AsyncIterator[Any], exchange: Exchange
    ) -> AsyncIterator[Any]:
        try:
            async for event in events:
                yield event
        finally:
            if exchange.code == BLOCKED:
                self._m.guardrail_blocks.labels("output").inc()
