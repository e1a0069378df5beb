"""``openai_upstream``: a model served by a pool of OpenAI-compatible servers (a gateway).

Each typed request is forwarded, streamed, to an upstream's ``/chat/completions`` (a
conversation) or ``/completions`` (a prompt); its chunks come back as typed events. The
upstream is chosen by :mod:`.balancer` (least outstanding requests among the healthy ones
whose breaker is closed); an attempt that fails before the first event of output (no
connection, a 5xx, a timeout) is retried on another upstream, up to ``max_attempts``. A 4xx
is the client's and passes through; once output has streamed a failure ends the stream with
the error, never a retry (the client has part of an answer already).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Mapping

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
    UpstreamRequestError,
    UpstreamUnavailableError,
)
from inferflux_plugins.backends.openai_upstream.balancer import (
    Balancer,
    Lease,
    NoUpstreamError,
    SlotTimeoutError,
    Upstream,
)
from inferflux_plugins.backends.openai_upstream.breaker import CircuitBreaker, Outcome
from inferflux_plugins.backends.openai_upstream.chunks import ChunkDecoder, StreamedError
from inferflux_plugins.backends.openai_upstream.exchange import Aborted, exchange
from inferflux_plugins.backends.openai_upstream.failures import malformed, redact
from inferflux_plugins.backends.openai_upstream.health import (
    PROBE_TIMEOUT,
    HealthChecker,
    pool_readiness,
)
from inferflux_plugins.backends.openai_upstream.options import OpenAIUpstreamOptions
from inferflux_plugins.backends.openai_upstream.payload import request_body, request_path
from inferflux_plugins.backends.openai_upstream.pool_config import parse_options, resolve_pool
from inferflux_plugins.backends.openai_upstream.pool_metrics import pool_metrics
from inferflux_plugins.backends.openai_upstream.sse import MalformedStreamError

log = logging.getLogger(__name__)

#: Seconds a readiness answer is reused when the background checks lag.
READINESS_TTL = 2.0
#: Seconds :meth:`OpenAIUpstreamBackend.abort` waits for the exchange to end.
ABORT_WAIT = 5.0


class OpenAIUpstreamBackend(RequestBackend):
    """Forwards requests to a pool of OpenAI-compatible ``/v1`` APIs; see the module
    docstring."""

    capabilities = RequestBackendCapabilities(
        input="messages", json_schema=True, native_tools=True, logprobs=True, n=True
    )
    options_model = OpenAIUpstreamOptions

    def __init__(self, spec: RequestBackendSpec) -> None:
        self.spec = spec
        self.options = parse_options(spec.model_name, spec.options)
        options = self.options
        pool = [
            Upstream(
                settings,
                CircuitBreaker(options.breaker_failures, options.breaker_cooldown_seconds),
            )
            for settings in resolve_pool(spec.model_name, options, spec.source)
        ]
        #: The model name the (first) upstream serves.
        self.upstream_model = pool[0].settings.model
        self.balancer = Balancer(pool)
        self.health = HealthChecker(
            spec.model_name, self.balancer, self.client, options.health_interval_seconds
        )
        #: Counters of the pool (retries, failures), exported by :meth:`metrics`.
        self.counts: Counter[str] = Counter()
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._live: dict[str, asyncio.Task[None]] = {}
        self._generating: set[str] = set()
        self._aborted: set[str] = set()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Probe the upstreams once; one that is down now is logged, not fatal (``/readyz``
        reports it until it answers)."""
        state = await self.readiness()
        self.health.stop()  # the serving loop may be another: it starts its own checks
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        log.info(
            "model %s: forwarding to %s as %r (%s)",
            self.spec.model_name,
            ", ".join(u.settings.base_url for u in self.balancer.upstreams),
            self.upstream_model,
            "ready" if state.ready else f"not ready: {state.reason}",
        )

    async def close(self) -> None:
        """Stop the health checks, cancel every request in flight, close the pool."""
        self.health.stop()
        pumps = list(self._live.values())
        for pump in pumps:
            pump.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        if self._client is not None:
            with contextlib.suppress(RuntimeError):  # made on a loop that is gone
                await self._client.aclose()
            self._client = None

    def client(self) -> httpx.AsyncClient:
        """The connection pool to the upstreams, made on first use on the running loop.

        A pool belongs to the loop it was made on: a backend started by ``Engine.load()``
        (on a loop of its own) gets a fresh pool on the serving loop.
        """
        loop = asyncio.get_running_loop()
        if self._client is not None and self._client_loop is not loop:
            self._client = None  # its loop is gone or another: its connections are unusable
        if self._client is None:
            self._client_loop = loop
            upstreams = self.balancer.upstreams
            limit = sum(u.settings.max_concurrency for u in upstreams) + 2 * len(upstreams)
            self._client = httpx.AsyncClient(
                headers={"Accept-Encoding": "identity"},
                limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit),
            )
        return self._client

    # -- generation ------------------------------------------------------------------------

    async def generate(self, request: InferenceRequest) -> AsyncIterator[InferenceEvent]:
        """Forward ``request`` and yield the upstream's answer as typed events."""
        self.capabilities.check(request)
        self.health.ensure_running()
        request_id = request.request_id
        self._generating.add(request_id)
        try:
            async with contextlib.aclosing(self._attempts(request)) as events:
                async for event in events:
                    yield event
        finally:
            self._generating.discard(request_id)
            self._aborted.discard(request_id)

    async def _attempts(self, request: InferenceRequest) -> AsyncGenerator[InferenceEvent, None]:
        """Try ``request`` on up to ``max_attempts`` upstreams while nothing has streamed."""
        until = self._wait_until(request.deadline)
        attempts = min(self.options.max_attempts, len(self.balancer.upstreams))
        tried: set[int] = set()
        error: InferfluxError | None = None
        for attempt in range(attempts):
            if request.request_id in self._aborted:
                break
            lease = await self._lease(tried, until, error)
            tried.add(lease.upstream.index)
            if attempt:
                self.counts["num_retries_total"] += 1
            result = _Attempt(request, ChunkDecoder(request.options.n))
            try:
                async with contextlib.aclosing(self._attempt(result, lease)) as events:
                    async for event in events:
                        yield event
            finally:
                self.balancer.release(lease, result.outcome)
            if result.retry is None:
                return
            error = result.retry
            log.warning(
                "model %s: retrying %s after %s failed: %s",
                self.spec.model_name,
                request.request_id,
                lease.upstream.settings.label,
                error.message,
            )
        # Aborted between attempts, or every attempt failed before any output.
        if error is None or request.request_id in self._aborted:
            for event in ChunkDecoder(request.options.n).end("cancelled"):
                yield event
            return
        self.counts["num_requests_unavailable_total"] += 1
        raise error

    async def _attempt(
        self, attempt: _Attempt, lease: Lease
    ) -> AsyncGenerator[InferenceEvent, None]:
        """One attempt on ``lease``'s upstream; sets ``attempt.outcome`` and, for a failure
        that may be retried, ``attempt.retry``."""
        request, decoder = attempt.request, attempt.decoder
        settings = lease.upstream.settings
        body = request_body(request, settings.model)
        feed = exchange(
            self.spec.model_name,
            self.client(),
            settings,
            request_path(request),
            body,
            self._live,
            request.request_id,
        )
        try:
            async with contextlib.aclosing(feed):
                async for data in feed:
                    events = decoder.decode(data)
                    if events:
                        attempt.started = True
                        attempt.outcome = "success"
                    for event in events:
                        yield event
        except Aborted:
            for event in decoder.end("cancelled"):
                yield event
            return
        except (InferfluxError, MalformedStreamError, StreamedError) as exc:
            error = self._as_error(exc, settings.secret)
            # A refusal (4xx) or an error the upstream itself streamed is its answer.
            answered = isinstance(error, UpstreamRequestError) or isinstance(exc, StreamedError)
            attempt.outcome = "neutral" if answered else "failure"
            if not answered:
                self.counts["num_upstream_failures_total"] += 1
                if not attempt.started:
                    attempt.retry = error  # nothing reached the client: another upstream may
                    return
            for event in self._failed(decoder, error, attempt.started):
                yield event
            return
        attempt.outcome = "success"
        unfinished = decoder.unfinished()
        if unfinished:
            reason = f"it ended before choice {unfinished[0]} finished"
            attempt.outcome = "failure"
            error = malformed(self.spec.model_name, reason)
            for event in self._failed(decoder, error, attempt.started):
                yield event
            return
        yield decoder.final_usage()

    def _failed(
        self, decoder: ChunkDecoder, error: InferfluxError, started: bool
    ) -> list[InferenceEvent]:
        """Raise ``error`` before the first event; after it, end each open choice with it."""
        if not started:
            if isinstance(error, UpstreamUnavailableError):
                self.counts["num_requests_unavailable_total"] += 1
            raise error
        self.counts["num_requests_cut_mid_stream_total"] += 1
        return decoder.end("error", error)

    def _as_error(self, exc: Exception, secret: str | None) -> InferfluxError:
        if isinstance(exc, InferfluxError):
            return exc
        if isinstance(exc, StreamedError):
            return UpstreamUnavailableError(
                f"model {self.spec.model_name}: the upstream failed mid-stream: "
                + redact(str(exc), secret)
            )
        return malformed(self.spec.model_name, str(exc))

    def _wait_until(self, deadline: float | None) -> float:
        """The instant a request stops waiting for a slot: ``queue_timeout_seconds`` from
        now (default ``timeout_seconds``), or its deadline if sooner."""
        wait = self.options.queue_timeout_seconds
        until = time.monotonic() + (self.options.timeout_seconds if wait is None else wait)
        return until if deadline is None else min(until, deadline)

    async def _lease(self, tried: set[int], until: float, error: InferfluxError | None) -> Lease:
        """A slot on an upstream not in ``tried``; the last attempt's ``error`` if none is
        left to try."""
        try:
            return await self.balancer.acquire(tried, until)
        except NoUpstreamError as exc:
            if error is not None:
                raise error from None
            raise UpstreamUnavailableError(
                f"model {self.spec.model_name}: every upstream is failing (circuit breakers "
                "open); retry shortly",
                headers={"Retry-After": str(int(exc.retry_after))},
            ) from None
        except SlotTimeoutError:
            if error is not None:
                raise error from None
            raise ServiceUnavailableError(
                f"model {self.spec.model_name}: every upstream has its most requests in "
                "flight and this one waited too long for its turn",
                code="queue_timeout",
                headers={"Retry-After": "1"},
            ) from None

    async def abort(self, request_id: str) -> None:
        """Cancel ``request_id``'s exchange (closing its connection); unknown ids are ignored."""
        if request_id in self._generating:
            self._aborted.add(request_id)
        pump = self._live.get(request_id)
        if pump is None:
            return
        pump.cancel()
        await asyncio.wait({pump}, timeout=ABORT_WAIT)

    # -- what the engine asks ----------------------------------------------------------------

    async def readiness(self) -> Readiness:
        """Ready while at least one upstream is healthy and its breaker is not open."""
        self.health.ensure_running()
        max_age = max(self.options.health_interval_seconds, READINESS_TTL) + PROBE_TIMEOUT
        await self.health.check_now_if_stale(max_age)
        return pool_readiness(self.balancer.upstreams)

    def metrics(self) -> Mapping[str, float]:
        """The pool's gauges and counters (see :func:`.pool_metrics.pool_metrics`)."""
        return pool_metrics(self.balancer, self.counts)


class _Attempt:
    """What one attempt of a request came to."""

    def __init__(self, request: InferenceRequest, decoder: ChunkDecoder) -> None:
        self.request = request
        self.decoder = decoder
        self.started = False
        self.outcome: Outcome = "neutral"
        self.retry: InferfluxError | None = None
