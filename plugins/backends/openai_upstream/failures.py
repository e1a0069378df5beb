"""What an upstream's failure becomes for inferflux's client.

A 4xx is the upstream refusing the request: its status, message, ``type``, ``param`` and
``code`` pass through (a 429 and its ``Retry-After`` too). Anything else — a 5xx, no
connection, a timeout, a malformed stream — is the upstream being unavailable: 503
``upstream_unavailable``, whose message names the failure but never the upstream's address,
its key or its internals.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import httpx

from inferflux_core.errors import UpstreamRequestError, UpstreamUnavailableError

log = logging.getLogger(__name__)

#: Bytes of an error body read from the upstream.
MAX_ERROR_BODY_BYTES = 64 * 1024
#: Characters of the upstream's error message passed on.
MAX_MESSAGE_CHARS = 1000
_FIELD = re.compile(r"[A-Za-z0-9_.\-\[\]]{1,128}")
_RETRY_AFTER = re.compile(r"[0-9]{1,9}|[A-Za-z]{3}, [0-9]{2} [A-Za-z]{3} [0-9]{4} [0-9:]{8} GMT")


async def read_error_body(response: httpx.Response) -> bytes:
    """At most :data:`MAX_ERROR_BODY_BYTES` of ``response``'s body."""
    body = bytearray()
    async for chunk in response.aiter_raw():
        body += chunk
        if len(body) >= MAX_ERROR_BODY_BYTES:
            break
    return bytes(body[:MAX_ERROR_BODY_BYTES])


def status_error(
    model: str, status: int, body: bytes, headers: httpx.Headers, secret: str | None = None
) -> UpstreamRequestError | UpstreamUnavailableError:
    """The error for an upstream answer with HTTP ``status`` (not 2xx) and error ``body``
    (``secret``, the key sent to it, is cut out of its message should it echo it)."""
    error = _error_object(body)
    message = error.get("message") if isinstance(error.get("message"), str) else None
    message = redact(message, secret) if message is not None else None
    retry_after = headers.get("retry-after", "")
    retry = {"Retry-After": retry_after} if _RETRY_AFTER.fullmatch(retry_after) else {}
    if 400 <= status < 500 and status != 408:
        text = message or f"the upstream refused the request (HTTP {status})"
        if status in (401, 403):  # inferflux's credential upstream, not the client's
            log.warning("model %s: the upstream refused its API key (HTTP %d)", model, status)
            text = f"the upstream refused this server's credential: {text}"
        return UpstreamRequestError(
            text[:MAX_MESSAGE_CHARS],
            status=status,
            error_type=_field(error.get("type")),
            param=_field(error.get("param")),
            code=_field(error.get("code")),
            headers=retry if status == 429 else None,
        )
    log.warning("model %s: the upstream answered HTTP %d: %s", model, status, (message or "")[:200])
    return UpstreamUnavailableError(
        f"model {model}: the upstream failed (HTTP {status})", headers=retry
    )


def transport_error(
    model: str, exc: httpx.HTTPError, *, quiet: bool = False
) -> UpstreamUnavailableError:
    """The error for a request that got no usable answer: no connection, a timeout, ...
    (logged unless ``quiet``: health probes log changes of state only)."""
    if isinstance(exc, httpx.TimeoutException):
        what = "did not answer in time"
    elif isinstance(exc, httpx.ConnectError):
        what = "cannot be reached"
    else:
        what = f"broke off the exchange ({type(exc).__name__})"
    if not quiet:
        log.warning("model %s: the upstream %s: %s", model, what, exc)
    return UpstreamUnavailableError(f"model {model}: the upstream {what}")


def redact(text: str, secret: str | None) -> str:
    """``text`` with every occurrence of ``secret`` replaced."""
    return text.replace(secret, "[redacted]") if secret else text


def malformed(model: str, reason: str) -> UpstreamUnavailableError:
    """The error for a stream that broke the protocol or its bounds."""
    log.warning("model %s: the upstream sent a malformed stream: %s", model, reason)
    return UpstreamUnavailableError(
        f"model {model}: the upstream sent a malformed stream: {reason}"
    )


def _error_object(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body)
    except ValueError:
        return {}
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict):
        return error
    if isinstance(error, str):  # some servers send {"error": "message"}
        return {"message": error}
    return {}


def _field(value: Any) -> str | None:
    return value if isinstance(value, str) and _FIELD.fullmatch(value) else None
