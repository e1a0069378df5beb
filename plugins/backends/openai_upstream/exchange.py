"""One attempt of a request at one upstream: the streamed HTTP exchange, in a task.

The exchange runs in a task of its own that feeds a bounded queue, so aborting the request
and closing the iterator early both cancel it, which closes the connection: the upstream
sees its client go away and frees the request. The first event must come within the
upstream's ``first_byte_timeout``; later ones within its ``timeout`` (httpx's read timeout).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, MutableMapping
from typing import Any

import httpx

from inferflux_core.errors import InferfluxError, UpstreamUnavailableError
from inferflux_core.request_context import outgoing_trace_headers
from inferflux_plugins.backends.openai_upstream.failures import (
    malformed,
    read_error_body,
    status_error,
    transport_error,
)
from inferflux_plugins.backends.openai_upstream.pool_config import UpstreamSettings
from inferflux_plugins.backends.openai_upstream.sse import (
    EventReader,
    MalformedStreamError,
    read_events,
)

log = logging.getLogger(__name__)

#: Events read from the upstream ahead of the consumer (back-pressure beyond that).
QUEUE_DEPTH = 64
_STREAM_HEADERS = {"Accept": "text/event-stream"}


class Aborted(Exception):
    """The exchange was cancelled (the request aborted, or the backend closed)."""


class _End:
    """The last item of an exchange's queue: how its task ended."""

    __slots__ = ("aborted", "error")

    def __init__(self, task: asyncio.Task[None]) -> None:
        self.aborted = task.cancelled()
        self.error = None if self.aborted else task.exception()


async def exchange(
    model: str,
    client: httpx.AsyncClient,
    upstream: UpstreamSettings,
    path: str,
    body: dict[str, Any],
    live: MutableMapping[str, asyncio.Task[None]],
    request_id: str,
) -> AsyncGenerator[str, None]:
    """The ``data`` of each event ``upstream`` streams for ``body``, relayed from the
    exchange's task (registered in ``live`` under ``request_id`` while it runs).

    The task queues each event's ``data`` (at most :data:`QUEUE_DEPTH` ahead of this
    consumer) and, however it ends, an :class:`_End`: so waiting is one ``queue.get()`` per
    event, with no task or ``asyncio.wait`` of its own.
    """
    queue: asyncio.Queue[str | _End] = asyncio.Queue()
    room = asyncio.Semaphore(QUEUE_DEPTH)
    pump = asyncio.create_task(
        _pump(model, client, upstream, path, body, queue, room), name=f"upstream-{request_id}"
    )
    pump.add_done_callback(lambda task: queue.put_nowait(_End(task)))
    live[request_id] = pump
    try:
        try:
            async with asyncio.timeout(upstream.first_byte_timeout):
                item = await queue.get()
        except TimeoutError:
            log.warning(
                "model %s: %s sent nothing in %.3g s",
                model,
                upstream.label,
                upstream.first_byte_timeout,
            )
            raise UpstreamUnavailableError(
                f"model {model}: the upstream did not answer in time"
            ) from None
        while not isinstance(item, _End):
            room.release()
            yield item
            item = await queue.get()
        if item.aborted:
            raise Aborted
        if item.error is not None:
            raise item.error
    finally:
        if live.get(request_id) is pump:
            del live[request_id]
        if not pump.done():
            pump.cancel()
        await asyncio.gather(pump, return_exceptions=True)


async def _pump(
    model: str,
    client: httpx.AsyncClient,
    upstream: UpstreamSettings,
    path: str,
    body: dict[str, Any],
    queue: asyncio.Queue[str | _End],
    room: asyncio.Semaphore,
) -> None:
    """POST ``body`` and queue the ``data`` of each event of the streamed answer (taking
    ``room`` for each: the consumer gives it back)."""
    timeout = httpx.Timeout(upstream.timeout, connect=upstream.connect_timeout)
    # The request's W3C trace context goes on (the task runs in the request's context).
    headers = {**upstream.headers, **outgoing_trace_headers(), **_STREAM_HEADERS}
    try:
        async with client.stream(
            "POST", upstream.base_url + path, json=body, headers=headers, timeout=timeout
        ) as response:
            if response.status_code != 200:
                error_body = await read_error_body(response)
                raise status_error(
                    model, response.status_code, error_body, response.headers, upstream.secret
                )
            async for data in read_events(response.aiter_raw(), EventReader()):
                await room.acquire()
                queue.put_nowait(data)
    except httpx.HTTPError as exc:
        raise transport_error(model, exc) from None
    except MalformedStreamError as exc:
        raise malformed(model, str(exc)) from None
    except InferfluxError:
        raise
    except Exception as exc:  # a bug here must still be a 503 for the client, not a 500
        log.exception("model %s: the exchange with %s failed", model, upstream.label)
        raise UpstreamUnavailableError(
            f"model {model}: the exchange with the upstream failed ({type(exc).__name__})"
        ) from None
