"""Server-sent events for streamed responses: chunks, keep-alives, errors, ``[DONE]``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from falcon.asgi import SSEvent

from inferflux_core.errors import InferfluxError

log = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 2.0
DONE = SSEvent(data=b"[DONE]")


async def sse_stream(
    chunks: AsyncIterator[dict[str, Any]],
    keepalive: float = KEEPALIVE_SECONDS,
    *,
    named: bool = False,
    send_done: bool = True,
) -> AsyncIterator[SSEvent]:
    """``data: {chunk}`` per chunk, then ``data: [DONE]``.

    ``named``: each chunk's ``type`` is also its ``event:`` name (the Responses API's
    stream); ``send_done=False`` leaves out ``[DONE]``.

    While no chunk comes (queued behind other requests) a comment line is sent every
    ``keepalive`` seconds, so a client that went away is noticed and its request cancelled.
    An error after the response started is sent as ``data: {"error": ...}`` (an unexpected
    one as a ``server_error``, its traceback logged), and the stream still ends with
    ``[DONE]``.
    """
    iterator = aiter(chunks)
    pending: asyncio.Future[dict[str, Any]] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(iterator))
            done, _ = await asyncio.wait({pending}, timeout=keepalive)
            if not done:
                yield SSEvent(comment="keep-alive")
                continue
            finished, pending = pending, None
            try:
                chunk = finished.result()
            except StopAsyncIteration:
                break
            except InferfluxError as exc:
                yield SSEvent(data=json.dumps(exc.to_body()).encode())
                break
            except Exception:  # a bug: the client still gets an error event and [DONE]
                log.exception("a streamed response failed")
                body = InferfluxError("internal server error").to_body()
                yield SSEvent(data=json.dumps(body).encode())
                break
            data = json.dumps(chunk, separators=(",", ":")).encode()
            yield SSEvent(data=data, event=str(chunk.get("type")) if named else None)
        if send_done:
            yield DONE
    finally:
        if pending is not None and not pending.done():
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()
