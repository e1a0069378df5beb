"""OpenAI's Responses API: ``POST /v1/responses`` and the stored responses' routes.

Creating a response is admitted like a chat completion (the ``inference`` scope, the
caller's model allow-list and priority cap, request and token rate limits, the guardrails on
the input and on what is generated, the audit line) and runs on the same driver. The stored
responses are the caller's own: another credential's id is a 404, as an unknown one.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import falcon.asgi

from inferflux_core.api.generation import Admission, whole_response
from inferflux_core.api.sse import RESPONSES_SSE, sse_stream
from inferflux_core.auth.scopes import INFERENCE
from inferflux_core.errors import (
    InferfluxError,
    InvalidRequestError,
    NotFoundError,
)
from inferflux_core.frontdoors.openai_responses_stream import ResponseEvents

if TYPE_CHECKING:
    from inferflux_core.api.exchange import Exchange
    from inferflux_core.engine.workers import WorkerPool
    from inferflux_core.frontdoors.driver import Call, Chunk, Driver
    from inferflux_core.frontdoors.openai_responses import ResponsesDoor
    from inferflux_core.frontdoors.openai_responses_output import ResponseTurn
    from inferflux_core.frontdoors.openai_responses_store import StoredResponse

log = logging.getLogger(__name__)

#: ``limit`` of ``GET /v1/responses/{id}/input_items``: OpenAI's default and bounds.
DEFAULT_ITEMS = 20
MAX_ITEMS = 100


class ResponsesResource:
    """``POST /v1/responses``: a Response object, or its event stream."""

    scopes = {"POST": INFERENCE}

    def __init__(
        self, door: ResponsesDoor, driver: Driver, admission: Admission, pool: WorkerPool
    ) -> None:
        self._door = door
        self._driver = driver
        self._admission = admission
        self._pool = pool

    def _parse_sync(self, body: Any, owner: str | None) -> tuple[Call, str | None]:
        call = self._door.parse(body, owner)
        text = self._door.input_text(call) if self._admission.needs_text else None
        return call, text

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Generate; stream the events if the body says ``"stream": true``."""
        body, exchange = await self._admission.body(req, check_priority=False)
        owner = exchange.principal.key_id if exchange.principal is not None else None
        call, text = await self._pool.run(self._parse_sync, body, owner)
        if exchange.principal is not None:
            exchange.principal.require_priority(call.requests[0].priority)
        await self._admission.check_input(exchange, text)
        guard = exchange.guardrail_input()
        turn: ResponseTurn = call.wire
        if call.stream:
            observe = exchange.observer(self._admission.audit)
            chunks = await self._driver.stream(self._door, call, exchange.usage, guard, observe)
            resp.set_header("Cache-Control", "no-cache")
            resp.set_header("X-Accel-Buffering", "no")
            resp.sse = sse_stream(self._streamed(turn, chunks, exchange), wire=RESPONSES_SSE)
            return
        result, collected = await whole_response(req, self._driver, self._door, call, exchange)
        exchange.record_result(collected)
        self._door.keep(turn, result)
        resp.media = result

    async def _streamed(
        self, turn: ResponseTurn, chunks: AsyncIterator[Chunk], exchange: Exchange
    ) -> AsyncIterator[Chunk]:
        """The driver's events; a failure ends the stream with ``error`` and
        ``response.failed``; the final response is stored."""
        encoder = turn.encoder
        assert isinstance(encoder, ResponseEvents)
        try:
            async for chunk in chunks:
                yield chunk
        except InferfluxError as exc:
            exchange.code = exc.code or exc.error_type
            for chunk in encoder.failure(exc):
                yield chunk
        except Exception:  # a bug: the client still gets a well-formed ending
            log.exception("a streamed response failed")
            exchange.code = "server_error"
            for chunk in encoder.failure(InferfluxError("internal server error")):
                yield chunk
        else:
            if encoder.final is not None:
                self._door.keep(turn, encoder.final)
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()


class StoredResponsesResource:
    """``GET`` / ``DELETE /v1/responses/{response_id}`` and ``GET .../input_items``."""

    scopes = {"GET": INFERENCE, "DELETE": INFERENCE}

    def __init__(self, door: ResponsesDoor) -> None:
        self._store = door.store

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, response_id: str
    ) -> None:
        """The stored Response object."""
        if req.get_param_as_bool("stream"):
            raise InvalidRequestError(
                "stream: a stored response cannot be streamed again", param="stream"
            )
        resp.media = self._entry(req, response_id, "responses.retrieve").response

    async def on_delete(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, response_id: str
    ) -> None:
        """Forget the response."""
        self._entry(req, response_id, "responses.delete")
        self._store.delete(_owner(req), response_id)
        resp.media = {"id": response_id, "object": "response.deleted", "deleted": True}

    async def on_get_items(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, response_id: str
    ) -> None:
        """The conversation the response answered, a page at a time."""
        entry = self._entry(req, response_id, "responses.input_items")
        limit = _limit(req.get_param("limit"))
        order = req.get_param("order") or "desc"
        if order not in ("asc", "desc"):
            raise InvalidRequestError("order: must be 'asc' or 'desc'", param="order")
        items = list(entry.context)
        if order == "desc":
            items.reverse()
        after = req.get_param("after")
        if after is not None:
            ids = [item["id"] for item in items]
            if after not in ids:
                raise InvalidRequestError(
                    f"after: no item {after[:64]!r} in this response's input", param="after"
                )
            items = items[ids.index(after) + 1 :]
        page = items[:limit]
        resp.media = {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(items) > limit,
        }

    def _entry(self, req: falcon.asgi.Request, response_id: str, endpoint: str) -> StoredResponse:
        req.context.exchange.endpoint = endpoint
        entry = self._store.get(_owner(req), response_id)
        if entry is None:
            raise NotFoundError(
                f"no response with id {response_id[:128]!r} was found", param="response_id"
            )
        return entry


def _owner(req: falcon.asgi.Request) -> str:
    principal = req.context.exchange.principal
    return str(principal.key_id) if principal is not None else ""


def _limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_ITEMS
    if not raw.isdigit() or not 1 <= int(raw[:8]) <= MAX_ITEMS or len(raw) > 8:
        raise InvalidRequestError(f"limit: must be an integer from 1 to {MAX_ITEMS}", param="limit")
    return int(raw)


def add_responses_routes(
    app: falcon.asgi.App[Any, Any],
    door: ResponsesDoor,
    driver: Driver,
    admission: Admission,
    pool: WorkerPool,
) -> None:
    """Mount the Responses API's routes."""
    app.add_route("/v1/responses", ResponsesResource(door, driver, admission, pool))
    stored = StoredResponsesResource(door)
    app.add_route("/v1/responses/{response_id}", stored)
    app.add_route("/v1/responses/{response_id}/input_items", stored, suffix="items")
