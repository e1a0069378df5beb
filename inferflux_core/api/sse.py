"""Server-sent events for streamed responses: chunks, keep-alives, errors, ``[DONE]``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from falcon.asgi import SSEvent

from inferflux_core.errors import InferfluxError

log = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 2.0
DONE = SSEvent(data=b"[DONE]")


def _openai_chunk(chunk: dict[str, Any]) -> SSEvent:
    return SSEvent(data=json.dumps(chunk, separators=(",", ":")).encode())


def _openai_error(error: InferfluxError) -> SSEvent:
    return SSEvent(data=json.dumps(error.to_body()).encode())


def _comment_keepalive() -> SSEvent:
    return SSEvent(comment="keep-alive")


@dataclass(frozen=True, slots=True)
class SseWire:
    """How one API writes its stream: a chunk, an error, a keep-alive (``ping``), and the
    last event (None: the stream just ends)."""

    chunk: Callable[[dict[str, Any]], SSEvent] = _openai_chunk
    error: Callable[[InferfluxError], SSEvent] = _openai_error
    ping: Callable[[], SSEvent] = _comment_keepalive
    done: SSEvent | None = DONE


#: OpenAI's streams: ``data: {chunk}`` lines, comment keep-alives, ``data: [DONE]``.
OPENAI_SSE = SseWire()


def _named_chunk(chunk: dict[str, Any]) -> SSEvent:
    data = json.dumps(chunk, separators=(",", ":")).encode()
    return SSEvent(data=data, event=str(chunk.get("type")))


#: The Responses API's stream: each chunk's ``type`` is also its ``event:`` name; no ``[DONE]``.
RESPONSES_SSE = SseWire(chunk=_named_chunk, done=None)


async def sse_stream(
    chunks: AsyncIterator[dict[str, Any]],
    keepalive: float = KEEPALIVE_SECONDS,
    wire: SseWire = OPENAI_SSE,
) -> AsyncIterator[SSEvent]:
    """``data: {chunk}`` per chunk, then ``data: [DONE]`` (as ``wire`` writes them).

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
                yield wire.ping()
                continue
            finished, pending = pending, None
            try:
                chunk = finished.result()
            except StopAsyncIteration:
                break
            except InferfluxError as exc:
                yield wire.error(exc)
                break
            except Exception:  # a bug: the client still gets an error event and [DONE]
                log.exception("a streamed response failed")
                yield wire.error(InferfluxError("internal server error"))
                break
            yield wire.chunk(chunk)
        if wire.done is not None:
            yield wire.done
    finally:
        if pending is not None and not pending.done():
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()
