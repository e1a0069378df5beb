"""Anthropic's wire shapes for what goes wrong on its routes: the error body, and its SSE.

Every error on ``/v1/messages`` and below (the access middleware's 401/403/429, a body over
the size limit, a bad field, a model that is not loaded, a failure mid-stream) is written as
``{"type": "error", "error": {"type", "message"}, "request_id"}`` with the same HTTP status
any other route gives it; only the body differs. The official SDKs pick their exception
class from the status, and the ``error.type`` names come from their type definitions.
"""

from __future__ import annotations

import json
from typing import Any

from falcon.asgi import SSEvent

from inferflux_core.api.sse import SseWire
from inferflux_core.errors import InferfluxError

#: The route prefix Anthropic's Messages API is served under.
ANTHROPIC_PREFIX = "/v1/messages"

#: ``error.type`` by HTTP status (any other 4xx is an ``invalid_request_error``, any other
#: 5xx an ``api_error``). A 503 (a busy worker pool, a model not ready, a shutdown) is
#: Anthropic's ``overloaded_error``, which its clients retry.
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
}


def is_anthropic_path(path: str) -> bool:
    """Whether ``path`` is one of Anthropic's routes (``/v1/messages`` and below)."""
    return path == ANTHROPIC_PREFIX or path.startswith(ANTHROPIC_PREFIX + "/")


def anthropic_error_type(status: int) -> str:
    """Anthropic's ``error.type`` for an HTTP status."""
    default = "api_error" if status >= 500 else "invalid_request_error"
    return _TYPES.get(status, default)


def anthropic_error_body(error: InferfluxError, request_id: str | None = None) -> dict[str, Any]:
    """``error`` in Anthropic's shape."""
    return {
        "type": "error",
        "error": {"type": anthropic_error_type(error.status), "message": error.message},
        "request_id": request_id,
    }


def _chunk(chunk: dict[str, Any]) -> SSEvent:
    return SSEvent(event=chunk["type"], data=json.dumps(chunk, separators=(",", ":")).encode())


def _error(error: InferfluxError) -> SSEvent:
    return SSEvent(event="error", data=json.dumps(anthropic_error_body(error)).encode())


def _ping() -> SSEvent:
    return SSEvent(event="ping", data=b'{"type":"ping"}')


#: Anthropic's streams: ``event: <type>`` and its JSON per event, ``ping`` keep-alives, an
#: ``error`` event for a failure after the response started, and no ``[DONE]``.
ANTHROPIC_SSE = SseWire(chunk=_chunk, error=_error, ping=_ping, done=None)
