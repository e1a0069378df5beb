"""One place that renders every error as OpenAI's JSON error body with the right status."""

from __future__ import annotations

import json
import logging
from typing import Any

import falcon
import falcon.asgi

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
    """Write ``error`` to ``resp`` as status + OpenAI error body + its headers.

    The error's code is kept on the request for the audit line.
    """
    req.context.error_code = error.code or error.error_type
    resp.status = error.status
    resp.content_type = falcon.MEDIA_JSON
    resp.text = json.dumps(error.to_body())
    for name, value in error.headers.items():
        resp.set_header(name, value)


async def handle_inferflux_error(
    req: falcon.asgi.Request, resp: falcon.asgi.Response, ex: InferfluxError, params: Any
) -> None:
    """Our own errors carry their status and body."""
    if ex.status >= 500:
        log.error("%s %s failed: %s", req.method, req.path, ex.message)
    render_error(req, resp, ex)


async def handle_http_error(
    req: falcon.asgi.Request, resp: falcon.asgi.Response, ex: falcon.HTTPError, params: Any
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
    render_error(req, resp, error)


async def handle_unexpected(
    req: falcon.asgi.Request, resp: falcon.asgi.Response, ex: Exception, params: Any
) -> None:
    """A bug: log the traceback, answer 500 without it."""
    log.exception("%s %s failed", req.method, req.path)
    render_error(req, resp, InferfluxError("internal server error"))


def install_error_handlers(app: falcon.asgi.App[Any, Any]) -> None:
    """Route every exception through the handlers above."""
    app.add_error_handler(Exception, handle_unexpected)
    app.add_error_handler(falcon.HTTPError, handle_http_error)
    app.add_error_handler(InferfluxError, handle_inferflux_error)
