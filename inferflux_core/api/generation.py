"""``POST /v1/chat/completions`` and ``POST /v1/completions``."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, cast

import falcon.asgi

from inferflux_core.api.body import read_json
from inferflux_core.api.disconnect import unless_disconnected
from inferflux_core.api.exchange import Exchange
from inferflux_core.api.sse import sse_stream
from inferflux_core.auth.scopes import INFERENCE
from inferflux_core.errors import ServiceUnavailableError
from inferflux_core.guardrails import filter_stream

if TYPE_CHECKING:
    from inferflux_core.auth.access import AccessControl
    from inferflux_core.serving import ChatService, CompletionService
    from inferflux_core.serving.embeddings import EmbeddingService


class GenerationResource:
    """One OpenAI generation endpoint: JSON in; a JSON object or an SSE stream out.

    Before the engine sees the request: the caller's model allow-list (403), then the
    guardrails on the prompt (400). After: the guardrails on the output, whole or streamed.
    A client that hangs up has its request cancelled, streamed or not.
    """

    scopes = {"POST": INFERENCE}

    def __init__(
        self,
        service: ChatService | CompletionService | EmbeddingService,
        endpoint: str,
        max_body_bytes: int,
        access: AccessControl,
    ) -> None:
        self._service = service
        self._endpoint = endpoint
        self._max_body_bytes = max_body_bytes
        self._guardrails = access.guardrails
        self._audit = access.records_requests
        self._needs_text = bool(access.guardrails) or self._audit

    async def admit(self, req: falcon.asgi.Request) -> tuple[Any, Exchange]:
        """Read the body; check the caller may use its model and the guardrails pass it."""
        body = await read_json(req, self._max_body_bytes)
        exchange: Exchange = req.context.exchange
        exchange.endpoint = self._endpoint
        model = body.get("model") if isinstance(body, dict) else None
        if isinstance(model, str) and exchange.principal is not None:
            exchange.principal.require_model(model)
            exchange.model = model
        if isinstance(body, dict) and exchange.principal is not None:
            exchange.principal.require_priority(body.get("priority"))
        if self._needs_text:
            exchange.prompt = await self._service.input_text(body)
        if self._guardrails:
            await self._guardrails.check_input(exchange.guardrail_input())
        return body, exchange

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Generate; stream if the body says ``"stream": true``."""
        body, exchange = await self.admit(req)
        if isinstance(body, dict) and body.get("stream") is True:
            # EmbeddingResource has its own on_post: here the service generates.
            service = cast("ChatService | CompletionService", self._service)
            chunks = await service.open_stream(body, exchange.usage)
            if self._guardrails:
                chunks = filter_stream(chunks, self._guardrails, exchange.guardrail_input())
            if self._audit:
                chunks = exchange.tap(chunks)
            resp.set_header("Cache-Control", "no-cache")
            resp.set_header("X-Accel-Buffering", "no")
            resp.sse = sse_stream(chunks)
        else:
            try:
                result: dict[str, Any] = await unless_disconnected(
                    req, self._service.create(body, exchange.usage)
                )
            except asyncio.CancelledError:
                # uvicorn cancels what still runs when its graceful shutdown times out: the
                # client gets a 503 to retry elsewhere, not a bare 500.
                raise ServiceUnavailableError(
                    "the server is shutting down; retry the request"
                ) from None
            if self._guardrails:
                self._guardrails.filter_result(result, exchange.guardrail_input())
            # After the guardrails: the audit line hashes (or keeps) what the client was sent.
            exchange.record_response(result)
            resp.media = result
