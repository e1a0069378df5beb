"""``openai_upstream``: a model served by any OpenAI-compatible server (a gateway).

Each typed request is forwarded, streamed, to the upstream's ``/chat/completions`` (a
conversation) or ``/completions`` (a prompt); the upstream's chunks come back as typed
events. The HTTP exchange runs in a task of its own that feeds a bounded queue, so
:meth:`OpenAIUpstreamBackend.abort` and closing the event iterator early both cancel it, which
closes the connection: the upstream sees its client go away and frees the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

import httpx

from inferflux_core.contracts import (
    InferenceEvent,
    InferenceRequest,
    Readiness,
    RequestBackend,
    RequestBackendCapabilities,
    RequestBackendSpec,
)
from inferflux_core.errors import (
    InferfluxError,
    ServiceUnavailableError,
    UpstreamUnavailableError,
)
from inferflux_plugins.backends.openai_upstream.chunks import ChunkDecoder, StreamedError
from inferflux_plugins.backends.openai_upstream.failures import (
    malformed,
    read_error_body,
    status_error,
    transport_error,
)
from inferflux_plugins.backends.openai_upstream.options import api_key, parse_options
from inferflux_plugins.backends.openai_upstream.payload import request_body, request_path
from inferflux_plugins.backends.openai_upstream.sse import (
    EventReader,
    MalformedStreamError,
    read_events,
)

log = logging.getLogger(__name__)

#: Events read from the upstream ahead of the consumer (back-pressure beyond that).
QUEUE_DEPTH = 64
#: Seconds a readiness answer is reused.
READINESS_TTL = 2.0
#: Seconds a readiness probe may take at most.
PROBE_TIMEOUT = 5.0
#: Bytes of ``/models`` read by a readiness probe.
MAX_MODELS_BYTES = 4 << 20
#: Seconds :meth:`OpenAIUpstreamBackend.abort` waits for the exchange to end.
ABORT_WAIT = 5.0


class OpenAIUpstreamBackend(RequestBackend):
    """Forwards requests to an OpenAI-compatible ``/v1`` API; see the module docstring."""

    capabilities = RequestBackendCapabilities(
        input="messages", json_schema=True, native_tools=True, logprobs=True, n=True
    )

    def __init__(self, spec: RequestBackendSpec) -> None:
        self.spec = spec
        self.options = parse_options(spec.model_name, spec.options)
        self.upstream_model = self.options.upstream_model or spec.source
        headers = {**self.options.headers, "Accept-Encoding": "identity"}
        key = api_key(spec.model_name, self.options)
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        self._headers = headers
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._slots = asyncio.Semaphore(self.options.max_concurrent)
        self._live: dict[str, asyncio.Task[None]] = {}
        self._waiting = 0
        self._probe_lock = asyncio.Lock()
        self._readiness: tuple[float, Readiness] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the connection pool; an upstream that is down now is logged, not fatal
        (``/readyz`` reports it until it answers)."""
        state = await self.readiness()
        if self._client is not None:  # the serving loop may be another: it opens its own
            await self._client.aclose()
            self._client = None
        log.info(
            "model %s: forwarding to %s as %r (%s)",
            self.spec.model_name,
            self.options.base_url,
            self.upstream_model,
            "ready" if state.ready else f"not ready: {state.reason}",
        )

    async def close(self) -> None:
        """Cancel every request in flight and close the connection pool."""
        pumps = list(self._live.values())
        for pump in pumps:
            pump.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def client(self) -> httpx.AsyncClient:
        """The connection pool to the upstream, made on first use on the running loop.

        A pool belongs to the loop it was made on: a backend started by ``Engine.load()``
        (on a loop of its own) gets a fresh pool on the serving loop.
        """
        loop = asyncio.get_running_loop()
        if self._client is not None and self._client_loop is not loop:
            self._client = None  # its loop is gone or another: its connections are unusable
        if self._client is None:
            self._client_loop = loop
            limit = self.options.max_concurrent + 2  # readiness probes get a connection too
            self._client = httpx.AsyncClient(
                headers=self._headers,
                timeout=httpx.Timeout(self.options.timeout_seconds),
                limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit),
            )
        return self._client

    # -- generation ------------------------------------------------------------------------

    async def generate(self, request: InferenceRequest) -> AsyncIterator[InferenceEvent]:
        """Forward ``request`` and yield the upstream's answer as typed events."""
        self.capabilities.check(request)
        url = self.options.base_url + request_path(request)
        body = request_body(request, self.upstream_model)
        decoder = ChunkDecoder(request.options.n)
        started = False
        try:
            async with contextlib.aclosing(
                self._exchange(request.request_id, request.deadline, url, body)
            ) as feed:
                async for data in feed:
                    events = decoder.decode(data)
                    started = started or bool(events)
                    for event in events:
                        yield event
        except _Aborted:
            for event in decoder.end("cancelled"):
                yield event
            return
        except (InferfluxError, MalformedStreamError, StreamedError) as exc:
            for event in self._failed(decoder, self._as_error(exc), started):
                yield event
            return
        unfinished = decoder.unfinished()
        if unfinished:
            reason = f"it ended before choice {unfinished[0]} finished"
            for event in self._failed(decoder, malformed(self.spec.model_name, reason), started):
                yield event
            return
        yield decoder.final_usage()

    @staticmethod
    def _failed(
        decoder: ChunkDecoder, error: InferfluxError, started: bool
    ) -> list[InferenceEvent]:
        """Raise ``error`` before the first event; after it, end each open choice with it."""
        if not started:
            raise error
        return decoder.end("error", error)

    def _as_error(self, exc: Exception) -> InferfluxError:
        if isinstance(exc, InferfluxError):
            return exc
        if isinstance(exc, StreamedError):
            return UpstreamUnavailableError(
                f"model {self.spec.model_name}: the upstream failed mid-stream: {exc}"
            )
        return malformed(self.spec.model_name, str(exc))

    async def _exchange(
        self, request_id: str, deadline: float | None, url: str, body: dict[str, Any]
    ) -> AsyncGenerator[str, None]:
        """The ``data`` of each event the upstream streams, relayed from the exchange's task."""
        await self._acquire_slot(deadline)
        queue: asyncio.Queue[str] = asyncio.Queue(QUEUE_DEPTH)
        pump = asyncio.create_task(self._pump(url, body, queue), name=f"upstream-{request_id}")
        self._live[request_id] = pump
        getter: asyncio.Future[str] | None = None
        try:
            while not (pump.done() and (pump.cancelled() or queue.empty())):
                if not queue.empty():
                    yield queue.get_nowait()
                    continue
                getter = asyncio.ensure_future(queue.get())
                await asyncio.wait({getter, pump}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    data, getter = getter.result(), None
                    yield data
                else:
                    getter.cancel()
                    getter = None
            if pump.cancelled():
                raise _Aborted
            pump.result()  # the exchange's error, if it failed
        finally:
            if getter is not None:
                getter.cancel()
            if self._live.get(request_id) is pump:
                del self._live[request_id]
            if not pump.done():
                pump.cancel()
            try:
                await asyncio.gather(pump, return_exceptions=True)
            finally:
                self._slots.release()

    async def _acquire_slot(self, deadline: float | None) -> None:
        """Wait for one of ``max_concurrent`` slots, up to ``timeout_seconds`` and the
        request's ``deadline``."""
        wait = self.options.timeout_seconds
        if deadline is not None:
            wait = min(wait, deadline - time.monotonic())
        self._waiting += 1
        try:
            async with asyncio.timeout(max(wait, 0.0)):
                await self._slots.acquire()
        except TimeoutError:
            raise ServiceUnavailableError(
                f"model {self.spec.model_name}: {self.options.max_concurrent} requests are "
                "in flight to the upstream and this one waited too long for its turn",
                code="queue_timeout",
                headers={"Retry-After": "1"},
            ) from None
        finally:
            self._waiting -= 1

    async def _pump(self, url: str, body: dict[str, Any], queue: asyncio.Queue[str]) -> None:
        """POST ``body`` and queue the ``data`` of each event of the streamed answer."""
        model = self.spec.model_name
        try:
            async with self.client().stream(
                "POST", url, json=body, headers={"Accept": "text/event-stream"}
            ) as response:
                if response.status_code != 200:
                    error_body = await read_error_body(response)
                    raise status_error(model, response.status_code, error_body, response.headers)
                async for data in read_events(response.aiter_raw(), EventReader()):
                    await queue.put(data)
        except httpx.HTTPError as exc:
            raise transport_error(model, exc) from None
        except MalformedStreamError as exc:
            raise malformed(model, str(exc)) from None
        except InferfluxError:
            raise
        except Exception as exc:  # a bug here must still be a 503 for the client, not a 500
            log.exception("model %s: the exchange with the upstream failed", model)
            raise UpstreamUnavailableError(
                f"model {model}: the exchange with the upstream failed ({type(exc).__name__})"
            ) from None

    async def abort(self, request_id: str) -> None:
        """Cancel ``request_id``'s exchange (closing its connection); unknown ids are ignored."""
        pump = self._live.get(request_id)
        if pump is None:
            return
        pump.cancel()
        await asyncio.wait({pump}, timeout=ABORT_WAIT)

    # -- what the engine asks ----------------------------------------------------------------

    async def readiness(self) -> Readiness:
        """Whether the upstream answers ``/models`` and lists the model (cached briefly)."""
        cached = self._readiness
        if cached is not None and time.monotonic() - cached[0] < READINESS_TTL:
            return cached[1]
        async with self._probe_lock:
            cached = self._readiness
            if cached is not None and time.monotonic() - cached[0] < READINESS_TTL:
                return cached[1]
            state = await self._probe()
            self._readiness = (time.monotonic(), state)
            return state

    async def _probe(self) -> Readiness:
        timeout = min(self.options.timeout_seconds, PROBE_TIMEOUT)
        try:
            async with self.client().stream(
                "GET", self.options.base_url + "/models", timeout=timeout
            ) as response:
                body = await _read_bounded(response.aiter_raw(), MAX_MODELS_BYTES)
                status = response.status_code
        except httpx.HTTPError as exc:
            return Readiness(False, transport_error(self.spec.model_name, exc).message)
        if status in (401, 403):
            return Readiness(False, f"the upstream refused the API key (HTTP {status})")
        if status != 200:
            return Readiness(False, f"the upstream's /models answered HTTP {status}")
        listed = _model_ids(body)
        if listed is not None and self.upstream_model not in listed:
            return Readiness(False, f"the upstream does not list model {self.upstream_model!r}")
        return Readiness(True)

    def metrics(self) -> Mapping[str, float]:
        """Requests in flight to the upstream, and requests waiting for one of its slots."""
        return {
            "num_requests_running": float(len(self._live)),
            "num_requests_waiting": float(self._waiting),
        }


class _Aborted(Exception):
    """The exchange was cancelled by :meth:`OpenAIUpstreamBackend.abort` or :meth:`close`."""


async def _read_bounded(chunks: AsyncIterator[bytes], limit: int) -> bytes | None:
    """The whole body, or None if it is longer than ``limit`` bytes."""
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def _model_ids(body: bytes | None) -> set[str] | None:
    """The ids a ``/models`` answer lists; None if it is not the list OpenAI's shape has."""
    if body is None:
        return None
    with contextlib.suppress(ValueError):
        parsed = json.loads(body)
        data = parsed.get("data") if isinstance(parsed, dict) else None
        if isinstance(data, list):
            return {m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)}
    return None
