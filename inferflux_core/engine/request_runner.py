"""Serving a model whose backend schedules itself (a :class:`RequestBackend`).

The backend batches, pages its KV and reuses prefixes on its own; this runner does what stays
inferflux's: admission (at most ``max_sequences`` requests run, ``max_queue`` more wait; one
more is a 429 ``queue_full``, a wait past ``queue_timeout`` or the request's deadline a 503),
priority (waiters are started highest first; passed to the backend when it takes it),
capability checks (a 400 naming the field the backend cannot serve), cancellation (a consumer
that goes away aborts the request in the backend) and readiness. It relays the backend's
typed events unchanged.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from inferflux_core.contracts.generation import (
    Finish,
    InferenceEvent,
    InferenceRequest,
    TextDelta,
    UsageReport,
)
from inferflux_core.contracts.request_backend import (
    Readiness,
    RequestBackend,
    RequestBackendCapabilities,
)
from inferflux_core.errors import (
    FatalBackendError,
    InvalidRequestError,
    ModelFailedError,
    QueueFullError,
    ServiceUnavailableError,
)
from inferflux_core.metrics import EngineMetrics, ModelSeries
from inferflux_core.metrics.backends import number_of

log = logging.getLogger(__name__)


def check_capabilities(
    model: str, capabilities: RequestBackendCapabilities, request: InferenceRequest
) -> None:
    """400 naming the first field of ``request`` the backend cannot serve."""
    options = request.options
    wanted: list[tuple[bool, str, str]] = [
        (options.logprobs is not None and not capabilities.logprobs, "logprobs", "token logprobs"),
        ((options.n > 1 or (options.best_of or 1) > 1) and not capabilities.n, "n", "n > 1"),
        (request.suffix is not None, "suffix", "fill-in-the-middle"),
        (options.echo, "echo", "echo"),
    ]
    constraint = request.constraint
    if constraint is not None:
        able = capabilities.grammar if constraint.kind == "grammar" else capabilities.json_schema
        wanted.append((not able, constraint.param, f"{constraint.kind} output constraints"))
    forced = request.tools and request.tool_choice.mode in ("required", "function")
    # Without native tools, a forced call is a grammar the engine writes from the tools.
    can_force = capabilities.native_tools or capabilities.grammar
    wanted.append((bool(forced) and not can_force, "tool_choice", "forced calls"))
    for missing, param, what in wanted:
        if missing:
            raise InvalidRequestError(
                f"{param}: the backend of model {model!r} does not support {what}",
                param=param,
                code="unsupported",
            )


@dataclass(order=True)
class _Waiter:
    key: tuple[int, int]
    started: asyncio.Future[None] = field(compare=False)


class RequestRunner:
    """Admission, priority, cancellation and readiness in front of one request backend."""

    def __init__(
        self,
        name: str,
        backend: RequestBackend,
        *,
        max_running: int,
        max_queue: int,
        queue_timeout: float = 0.0,
        metrics: EngineMetrics | None = None,
    ) -> None:
        self.name = name
        self.metrics = metrics
        #: This model's serving metrics; None without metrics.
        self.series = metrics.series(name) if metrics is not None else None
        self._reported: dict[str, float] = {}
        if metrics is not None:
            metrics.on_scrape(name, self._scrape_metrics)
        self.backend = backend
        self.max_running = max_running
        self.max_queue = max_queue
        self.queue_timeout = queue_timeout
        self.running = 0
        self._waiting: list[_Waiter] = []
        self._order = itertools.count()
        self._failure: str | None = None

    @property
    def failure(self) -> str | None:
        """Why the model stopped serving (its backend's :meth:`~RequestBackend.failure`, or a
        :class:`FatalBackendError` it raised); None while it serves."""
        if self._failure is None:
            try:
                self._failure = self.backend.failure()
            except Exception as exc:
                self._failure = f"the backend's failure check raised {type(exc).__name__}: {exc}"
        return self._failure

    @failure.setter
    def failure(self, reason: str | None) -> None:
        self._failure = reason

    def fail(self, error: FatalBackendError) -> None:
        """Mark the model failed: readiness false, every later request a 503 at once."""
        if self._failure is None:
            log.error("model %s failed: %s", self.name, error.message)
            self._failure = error.message

    @property
    def waiting(self) -> int:
        """Requests waiting for a slot."""
        return len(self._waiting)

    def _gauges(self) -> None:
        if self.series is not None:
            self.series.running.set(self.running)
            self.series.waiting.set(len(self._waiting))

    def _scrape_metrics(self) -> None:
        """Bring in what the backend knows better (at a scrape): requests running and waiting
        inside it (its waiting adds to ours), KV usage, and its cumulative prefix cache and
        preemption counts (added as they grow); and the failed state once it failed."""
        series, metrics = self.series, self.metrics
        assert series is not None and metrics is not None
        if self.failure is not None:
            metrics.model_state(self.name, "failed")
        report = {k: number_of(v) for k, v in dict(self.backend.metrics()).items()}
        running, waiting = report.get("num_requests_running"), report.get("num_requests_waiting")
        if running is not None:
            series.running.set(running)
        series.waiting.set(len(self._waiting) + (waiting or 0.0))
        series.kv_cache_usage.set(report.get("kv_cache_usage_perc") or 0.0)
        for name, counter in (
            ("prefix_cache_queries", series.prefix_queries),
            ("prefix_cache_hits", series.prefix_hits),
            ("num_preemptions", series.preemptions),
        ):
            value = report.get(name)
            if value is None:
                continue
            grown = value - self._reported.get(name, 0.0)
            if grown > 0:
                counter.inc(grown)
            self._reported[name] = value

    async def readiness(self) -> Readiness:
        """The backend's readiness; not ready (with the reason) if it raises."""
        if self.failure is not None:
            return Readiness(False, self.failure)
        try:
            return await self.backend.readiness()
        except Exception as exc:
            return Readiness(False, f"{type(exc).__name__}: {exc}")

    async def open(self, request: InferenceRequest) -> AsyncIterator[InferenceEvent]:
        """Admit ``request`` and start it; the returned iterator yields its events.

        Refusals (capabilities, a full queue, the backend's own) raise here, before any event.
        """
        check_capabilities(self.name, self.backend.capabilities, request)
        if self.failure is not None:
            raise ModelFailedError(f"model {self.name!r} failed: {self.failure}")
        submitted = time.monotonic()
        await self._admit(request)
        admitted = time.monotonic()
        self._gauges()
        try:
            events = aiter(self.backend.generate(request))
            first = await anext(events)
        except BaseException as exc:
            self._leave()
            if isinstance(exc, FatalBackendError):
                self.fail(exc)
            if isinstance(exc, StopAsyncIteration):
                raise ServiceUnavailableError(
                    f"model {self.name!r}: the backend ended the request without output"
                ) from None
            raise
        return _Relay(self, request.request_id, first, events, (submitted, admitted))

    async def _admit(self, request: InferenceRequest) -> None:
        if request.deadline is not None and time.monotonic() >= request.deadline:
            raise ServiceUnavailableError("the request's deadline passed before it started")
        if self.running < self.max_running and not self._waiting:
            self.running += 1
            return
        if len(self._waiting) >= self.max_queue:
            raise QueueFullError(
                f"model {self.name!r} has {self.max_queue} requests waiting; retry shortly",
                headers={"Retry-After": "1"},
            )
        waiter = _Waiter((-request.priority, next(self._order)), asyncio.Future())
        heapq.heappush(self._waiting, waiter)
        self._gauges()
        try:
            await asyncio.wait_for(waiter.started, self._wait_limit(request))
        except TimeoutError:
            self._forget(waiter)
            raise ServiceUnavailableError(
                f"model {self.name!r}: the request waited too long for a free slot; retry",
                headers={"Retry-After": "1"},
            ) from None
        except BaseException:
            if waiter.started.done() and not waiter.started.cancelled():
                self._leave()  # it was started just as its caller went away
            self._forget(waiter)
            raise

    def _wait_limit(self, request: InferenceRequest) -> float | None:
        limits = [self.queue_timeout] if self.queue_timeout > 0 else []
        if request.deadline is not None:
            limits.append(max(0.0, request.deadline - time.monotonic()))
        return min(limits) if limits else None

    def _forget(self, waiter: _Waiter) -> None:
        if waiter in self._waiting:
            self._waiting.remove(waiter)
            heapq.heapify(self._waiting)
            self._gauges()

    def _leave(self) -> None:  # also called by _Relay
        """A running request ended: start the highest-priority waiter in its slot."""
        while self._waiting:
            waiter = heapq.heappop(self._waiting)
            if not waiter.started.done():
                waiter.started.set_result(None)
                self._gauges()
                return
        self.running -= 1
        self._gauges()


class _Relay:
    """The events of one admitted request; closing it (even before the first event is read)
    frees its slot, and closing it before the end aborts the request in the backend."""

    def __init__(
        self,
        runner: RequestRunner,
        request_id: str,
        first: InferenceEvent,
        events: AsyncIterator[InferenceEvent],
        times: tuple[float, float],
    ) -> None:
        self._runner = runner
        self._timing = _Timing(runner.series, *times) if runner.series is not None else None
        self._usage: UsageReport | None = None
        self._request_id = request_id
        self.first = first
        self._first: InferenceEvent | None = first
        self._events = events
        self._closed = False

    def __aiter__(self) -> _Relay:
        return self

    async def __anext__(self) -> InferenceEvent:
        if self._closed:
            raise StopAsyncIteration
        if self._first is not None:
            first, self._first = self._first, None
            return self._observe(first)
        try:
            return self._observe(await anext(self._events))
        except StopAsyncIteration:
            await self._close(finished=True)
            raise
        except BaseException:
            await self._close(finished=False)
            raise

    def _observe(self, event: InferenceEvent) -> InferenceEvent:
        if isinstance(event, Finish) and isinstance(event.error, FatalBackendError):
            self._runner.fail(event.error)
        if isinstance(event, UsageReport):
            self._usage = event
        elif self._timing is not None:
            self._timing.observe(event)
        return event

    async def aclose(self) -> None:
        """Stop: free the slot and abort the request if it had not finished."""
        await self._close(finished=False)

    async def _close(self, *, finished: bool) -> None:
        if self._closed:
            return
        self._closed = True
        self._runner._leave()
        if self._timing is not None:
            self._timing.closed(self._usage)
        aclose = getattr(self._events, "aclose", None)
        if aclose is not None:
            await aclose()
        if not finished:
            try:
                await self._runner.backend.abort(self._request_id)
            except Exception as exc:
                log.warning(
                    "model %s: abort of %s failed: %s", self._runner.name, self._request_id, exc
                )


class _Timing:
    """What one request's events tell the serving metrics: per choice, the time to its first
    text and between texts, and its phases once it finishes; the usage once it closes."""

    def __init__(self, series: ModelSeries, submitted: float, admitted: float) -> None:
        self._series = series
        self._submitted = submitted
        self._admitted = admitted
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._open: set[int] = {0}

    def observe(self, event: InferenceEvent) -> None:
        """Time a text delta, or count a finished choice."""
        series, now = self._series, time.monotonic()
        if isinstance(event, TextDelta) and event.text:
            choice = event.choice
            self._open.add(choice)
            if choice not in self._first:
                self._first[choice] = now
                series.ttft.observe(now - self._submitted)
            else:
                series.inter_token.observe(now - self._last[choice])
            self._last[choice] = now
        elif isinstance(event, Finish):
            self._open.discard(event.choice)
            self._finished(event.choice, event.reason, now)

    def _finished(self, choice: int, reason: str, now: float) -> None:
        self._series.request_finished(
            reason,
            submitted=self._submitted,
            scheduled=self._admitted,
            first_token=self._first.get(choice),
            ended=now,
        )

    def closed(self, usage: UsageReport | None) -> None:
        """Count the usage; a choice that never finished was aborted."""
        now = time.monotonic()
        for choice in sorted(self._open):
            self._finished(choice, "cancelled", now)
        self._open.clear()
        if usage is not None:
            series = self._series
            series.prompt_tokens.inc(usage.prompt_tokens)
            series.generation_tokens.inc(usage.completion_tokens)
            series.request_prompt_tokens.observe(usage.prompt_tokens)
            series.request_generation_tokens.observe(usage.completion_tokens)
