"""One place that renders every error as OpenAI's JSON error body with the right status
(Anthropic's on its own routes: :mod:`inferflux_core.api.anthropic_errors`)."""

from __future__ import annotations

import json
import logging
from typing import Any

import falcon
import falcon.asgi

from inferflux_core.api.anthropic_errors import anthropic_error_body, is_anthropic_path
from inferflux_core.errors import (
    InferfluxError,
    InvalidRequestError,
    MethodNotAllowedError,
    NotFoundError,
    PayloadTooLargeError,
)

log = logging.getLogger(__name__)


def render_error(
    req: falcon.asgi.Request, resp: falcon.asgi.Response, error: InferfluxError
) -> None:
    """Write ``error`` to ``resp`` as status + OpenAI error body (Anthropic's on its routes)
    + its headers.

    The error's code is kept on the request for the audit line.
    """
    req.context.error_code = error.code or error.error_type
    resp.status = error.status
    resp.content_type = falcon.MEDIA_JSON
    if is_anthropic_path(req.path):
        body = anthropic_error_body(error, req.context.get("request_id"))
    else:
        body = error.to_body()
    resp.text = json.dumps(body)
    for name, value in error.headers.items():
        resp.set_header(name, value)


async def close_websocket(ws: falcon.asgi.WebSocket, error: InferfluxError) -> None:
    """Refuse or end a websocket with close code 4000 + the error's HTTP status (a handshake
    not yet accepted is denied: the client sees HTTP 403)."""
    if not ws.closed:
        await ws.close(4000 + error.status)


async def deliver(
    req: falcon.asgi.Request,
    resp: falcon.asgi.Response | None,
    ws: falcon.asgi.WebSocket | None,
    error: InferfluxError,
) -> None:
    """Render ``error`` on the response, or close the websocket with it."""
    if ws is not None:
        await close_websocket(ws, error)
    elif resp is not None:
        render_error(req, resp, error)


async def handle_inferflux_error(
    req: falcon.asgi.Request,
    resp: falcon.asgi.Response | None,
    ex: InferfluxError,
    params: Any,
    ws: falcon.asgi.WebSocket | None = None,
) -> None:
    """Our own errors carry their status and body."""
    if ex.status >= 500:
        log.error("%s %s failed: %s", req.method, req.path, ex.message)
    await deliver(req, resp, ws, ex)


async def handle_http_error(
    req: falcon.asgi.Request,
    resp: falcon.asgi.Response | None,
    ex: falcon.HTTPError,
    params: Any,
    ws: falcon.asgi.WebSocket | None = None,
) -> None:
    """falcon's own errors (no route, wrong method, bad media) in OpenAI's shape."""
    status = ex.status_code
    message = ex.description or ex.title or "error"
    error: InferfluxError
    if status == 404:
        error = NotFoundError(f"no route for {req.method} {req.path}")
    elif status == 405:
        error = MethodNotAllowedError(f"method {req.method} is not allowed on {req.path}")
    elif status == 413:
        error = PayloadTooLargeError(message)
    elif status < 500:
        error = InvalidRequestError(message)
        error.status = status
    else:
        error = InferfluxError(message)
        error.status = status
    error.headers.update(ex.headers or {})
    await deliver(req, resp, ws, error)


async def handle_unexpected(
    req: falcon.asgi.Request,
    resp: falcon.asgi.Response | None,
    ex: Exception,
    params: Any,
    ws: falcon.asgi.WebSocket | None = None,
) -> None:
    """A bug: log the traceback, answer 500 without it. A websocket whose client has gone
    (closed before the handler's last send or close) is no bug: logged at debug, nothing sent."""
    if ws is not None and _client_gone(ex):
        log.debug("%s %s: the websocket client disconnected (%s)", req.method, req.path, ex)
        return
    log.exception("%s %s failed", req.method, req.path)
    error = InferfluxError("internal server error")
    await deliver(req, resp, ws, error)


def _client_gone(ex: Exception) -> bool:
    """Whether ``ex`` says the websocket's client disconnected: falcon's
    ``WebSocketDisconnected``, or the ASGI server's error for a send on a closed socket
    (uvicorn's ``ClientDisconnected``, an ``OSError``)."""
    if isinstance(ex, falcon.errors.WebSocketDisconnected):
        return True
    return isinstance(ex, OSError) and type(ex).__name__ == "ClientDisconnected"


def install_error_handlers(app: falcon.asgi.App[Any, Any]) -> None:
    """Route every exception through the handlers above."""
    app.add_error_handler(Exception, handle_unexpected)
    app.add_error_handler(falcon.HTTPError, handle_http_error)
    app.add_error_handler(InferfluxError, handle_inferflux_error)
