"""The falcon middleware that authenticates every request before routing.

Order, for each request:

1. ``process_request`` (before routing): refuse a non-canonical path (400); let an exact
   public path through (``GET``/``HEAD`` only); otherwise authenticate the
   ``Authorization`` header (401); on Anthropic's routes (``/v1/messages`` and below) an
   ``x-api-key`` header too, which Anthropic's clients send (when both are sent they must
   agree). No other header is consulted: ``Host`` and ``X-Forwarded-*`` never matter, and
   ``x-api-key`` is no credential elsewhere.
2. ``process_resource`` (after routing): check the scope the resource declares for the
   method (403), then the key's request rate (429); a generating request gets the token
   reservation hook on its usage meter, which the engine calls with the request's
   worst case once the prompt is tokenized (429 if it does not fit).
3. ``process_response``: settle the reservation with the tokens the request used, add the
   ``x-ratelimit-*`` headers and write the audit line — for a stream, once its last event
   is sent.

A websocket is checked the same way before it is accepted (``process_request_ws``,
``process_resource_ws``): the ``Authorization`` header of the handshake, then the scope the
resource declares under ``"WEBSOCKET"`` (``admin`` if it declares none), then the request
rate. A refused handshake is denied before it is accepted (the client sees HTTP 403); the
error handlers close it, so the resource's ``on_websocket`` never runs.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import AsyncIterator
from typing import Any

import falcon.asgi

from inferflux_core.api.anthropic_errors import is_anthropic_path
from inferflux_core.api.exchange import Exchange
from inferflux_core.auth.access import AccessControl
from inferflux_core.auth.paths import PUBLIC_METHODS, check_canonical, public_paths
from inferflux_core.auth.scopes import INFERENCE, required_scope, websocket_scope
from inferflux_core.errors import AuthenticationError


def _anthropic_api_key(req: falcon.asgi.Request) -> str | None:
    """The ``x-api-key`` header, on Anthropic's routes only."""
    return req.get_header("x-api-key") if is_anthropic_path(req.path) else None


class AccessMiddleware:
    """Authentication, authorization, rate limits and audit for every non-public route."""

    def __init__(self, access: AccessControl, *, public_metrics: bool = False) -> None:
        """``public_metrics``: ``/metrics`` is served without a credential."""
        self._access = access
        self._public = public_paths(public_metrics)

    async def process_request(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Authenticate before routing, so no path variant reaches a resource unchecked."""
        exchange = Exchange(req.context.request_id, req.method, req.path)
        req.context.exchange = exchange
        req.context.public = False
        check_canonical(req.path, req.scope.get("raw_path"))
        if req.path in self._public and req.method in PUBLIC_METHODS:
            req.context.public = True
            return
        exchange.principal = await self._access.authenticate(
            req.get_header("Authorization"), _anthropic_api_key(req)
        )

    async def process_resource(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, resource: Any, params: Any
    ) -> None:
        """The scope the route needs, then the caller's request rate."""
        if req.context.public:
            if not getattr(resource, "public", False):
                raise AuthenticationError("no credential", code="missing_credentials")
            return
        principal = req.context.exchange.principal
        scope = required_scope(resource, req.method)
        if scope is None:
            return
        principal.require(scope)
        limiter = self._access.limiter
        req.context.rate_headers = limiter.admit(
            principal.key_id, principal.limits, generates=scope == INFERENCE
        )
        if scope == INFERENCE and principal.limits.tokens_per_minute is not None:
            req.context.exchange.usage.on_reserve = functools.partial(
                limiter.reserve, principal.key_id, principal.limits
            )

    async def process_request_ws(self, req: falcon.asgi.Request, ws: falcon.asgi.WebSocket) -> None:
        """Authenticate a websocket handshake as any request (no websocket route is public)."""
        request_id = req.context.get("request_id") or f"ws-{secrets.token_hex(8)}"
        req.context.exchange = Exchange(request_id, "WEBSOCKET", req.path)
        req.context.public = False
        check_canonical(req.path, req.scope.get("raw_path"))
        req.context.exchange.principal = await self._access.authenticate(
            req.get_header("Authorization"), _anthropic_api_key(req)
        )

    async def process_resource_ws(
        self,
        req: falcon.asgi.Request,
        ws: falcon.asgi.WebSocket,
        resource: Any,
        params: Any,
    ) -> None:
        """The scope the route declares for websockets, then the caller's request rate."""
        principal = req.context.exchange.principal
        principal.require(websocket_scope(resource))
        self._access.limiter.admit(principal.key_id, principal.limits, generates=False)

    async def process_response(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        resource: Any,
        req_succeeded: bool,
    ) -> None:
        """Rate-limit headers; audit now, or after the stream's last event."""
        exchange: Exchange | None = req.context.get("exchange")
        if exchange is None or req.context.get("public"):
            return
        exchange.code = exchange.code or req.context.get("error_code")
        status = resp.status_code
        if resp.sse is not None and status < 400:
            exchange.stream = True
            resp.sse = self._finish_after(resp.sse, exchange, status)
        else:
            self._finish(exchange, status)
        principal = exchange.principal
        if principal is not None and status != 429 and "rate_headers" in req.context:
            resp.set_headers(self._access.limiter.headers(principal.key_id, principal.limits))

    async def process_shutdown(self, scope: Any, event: Any) -> None:
        """Close guardrails, the audit file and the policy store."""
        await self._access.close()

    async def _finish_after(
        self, events: AsyncIterator[Any], exchange: Exchange, status: int
    ) -> AsyncIterator[Any]:
        try:
            async for event in events:
                yield event
        finally:
            self._finish(exchange, status)

    def _finish(self, exchange: Exchange, status: int) -> None:
        if exchange.closed:
            return
        exchange.closed = True
        principal = exchange.principal
        if principal is not None:
            usage = exchange.usage
            self._access.limiter.settle(
                principal.key_id, principal.limits, usage.total_tokens, usage.reserved
            )
        self._access.record_finished(
            exchange.audit_entry(status), prompt=exchange.prompt, response=exchange.response
        )
