"""``POST /v1/chat/completions`` and ``POST /v1/completions``: any generating front door."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import falcon.asgi

from inferflux_core.api.body import read_json
from inferflux_core.api.disconnect import unless_disconnected
from inferflux_core.api.exchange import Exchange
from inferflux_core.api.sse import OPENAI_SSE, SseWire, sse_stream
from inferflux_core.auth.scopes import INFERENCE
from inferflux_core.engine.adapters import qualified_name
from inferflux_core.errors import GuardrailError, ServiceUnavailableError

if TYPE_CHECKING:
    from inferflux_core.auth.access import AccessControl
    from inferflux_core.engine.collect import Collected
    from inferflux_core.engine.workers import WorkerPool
    from inferflux_core.frontdoors.driver import Call, Chunk, Driver, GenerationDoor


class Admission:
    """What every inference route checks before the engine sees a request: the caller's
    project (404 for another project's model), model allow-list (403) and priority cap, then
    the guardrails on the input text (400)."""

    def __init__(self, endpoint: str, max_body_bytes: int, access: AccessControl) -> None:
        self.endpoint = endpoint
        self.max_body_bytes = max_body_bytes
        self.guardrails = access.guardrails
        self.audit = access.records_requests
        self.needs_text = bool(access.guardrails) or self.audit
        self.projects = access.projects

    async def body(
        self, req: falcon.asgi.Request, *, check_priority: bool = True
    ) -> tuple[Any, Exchange]:
        """Read the body; check the caller may use its model (and, unless the caller checks
        the parsed value itself, its priority)."""
        body = await read_json(req, self.max_body_bytes)
        exchange: Exchange = req.context.exchange
        exchange.endpoint = self.endpoint
        model = body.get("model") if isinstance(body, dict) else None
        if isinstance(model, str) and exchange.principal is not None:
            # Another project's model is not found (404) before any allow-list (403) speaks.
            adapter = body.get("adapter")  # a bad one is the door's 400, not ours
            named = qualified_name(model, adapter) if isinstance(adapter, str) else model
            self.projects.require_visible(exchange.principal, named)
            exchange.principal.require_model(model)
            exchange.model = model
        if check_priority and isinstance(body, dict) and exchange.principal is not None:
            exchange.principal.require_priority(body.get("priority"))
        return body, exchange

    async def check_input(self, exchange: Exchange, text: str | None) -> None:
        """Keep the input text for the audit line and let the guardrails judge it."""
        exchange.prompt = text
        if self.guardrails:
            try:
                await self.guardrails.check_input(exchange.guardrail_input())
            except GuardrailError:
                exchange.blocked = "input"
                raise


async def whole_response(
    req: falcon.asgi.Request, driver: Driver, door: GenerationDoor, call: Call, exchange: Exchange
) -> tuple[Chunk, Collected]:
    """The whole response of ``call``, behind the guardrails; cancelled if the client hangs
    up, a 503 if the server shuts down first."""
    try:
        return await unless_disconnected(
            req, driver.whole(door, call, exchange.usage, exchange.guardrail_input())
        )
    except asyncio.CancelledError:
        # uvicorn cancels what still runs when its graceful shutdown times out: the
        # client gets a 503 to retry elsewhere, not a bare 500.
        raise ServiceUnavailableError("the server is shutting down; retry the request") from None


class GenerationResource:
    """One generating endpoint: JSON in; a JSON object or an SSE stream out.

    The front door parses and encodes; the driver runs the request through the engine and the
    guardrails. A client that hangs up has its request cancelled, streamed or not.
    """

    scopes = {"POST": INFERENCE}

    def __init__(
        self,
        door: GenerationDoor,
        driver: Driver,
        admission: Admission,
        pool: WorkerPool,
        wire: SseWire = OPENAI_SSE,
    ) -> None:
        """``wire``: how the door's API writes a stream (OpenAI's ``data:`` lines by default)."""
        self._door = door
        self._driver = driver
        self._admission = admission
        self._pool = pool
        self._wire = wire

    async def _parse(self, body: Any) -> tuple[Call, str | None]:
        return await self._pool.run(self._parse_sync, body)

    def _parse_sync(self, body: Any) -> tuple[Call, str | None]:
        call = self._door.parse(body)
        text = self._door.input_text(call) if self._admission.needs_text else None
        return call, text

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Generate; stream if the body says ``"stream": true``."""
        body, exchange = await self._admission.body(req, check_priority=False)
        call, text = await self._parse(body)  # 400 for a priority out of range ...
        if exchange.principal is not None:  # ... then 403 for one above the caller's cap
            exchange.principal.require_priority(call.requests[0].priority)
        await self._admission.check_input(exchange, text)
        guard = exchange.guardrail_input()
        if call.stream:
            observe = exchange.observer(self._admission.audit)
            chunks = await self._driver.stream(self._door, call, exchange.usage, guard, observe)
            resp.set_header("Cache-Control", "no-cache")
            resp.set_header("X-Accel-Buffering", "no")
            resp.sse = sse_stream(chunks, wire=self._wire)
            return
        result, collected = await whole_response(req, self._driver, self._door, call, exchange)
        # After the guardrails: the audit line hashes (or keeps) what the client was sent.
        exchange.record_result(collected)
        resp.media = result
