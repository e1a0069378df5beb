"""Health checks of a pool's upstreams: ``GET /models`` of each, in the background.

An upstream is healthy when its ``/models`` answers 200 and lists the model it should serve
(or answers something that is not OpenAI's list: then it cannot say). A check's result also
serves as the probe of a half-open breaker. The checks run in a task on the loop that serves
requests, started by the first request or readiness question on that loop (a backend started
on a loop of its own, as ``Engine.load`` does, would otherwise probe from a dead loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

import httpx

from inferflux_core.contracts import Readiness
from inferflux_plugins.backends.openai_upstream.balancer import Balancer, Upstream
from inferflux_plugins.backends.openai_upstream.failures import transport_error

log = logging.getLogger(__name__)

#: Seconds a health probe may take at most.
PROBE_TIMEOUT = 5.0
#: Bytes of ``/models`` read by a health probe.
MAX_MODELS_BYTES = 4 << 20


@dataclass(frozen=True, slots=True)
class Verdict:
    """One health check's result. ``down``: no answer or a 5xx, which counts against the
    upstream's breaker; a refused key or an unlisted model makes it unhealthy only (it
    answers: requests still get its own error when nothing healthier is left)."""

    healthy: bool
    reason: str | None = None
    down: bool = False


class HealthChecker:
    """Probes every upstream of ``balancer`` every ``interval`` seconds."""

    def __init__(
        self,
        model_name: str,
        balancer: Balancer,
        client: Callable[[], httpx.AsyncClient],
        interval: float,
    ) -> None:
        self.model_name = model_name
        self.balancer = balancer
        self.interval = interval
        self._client = client
        self._task: asyncio.Task[None] | None = None
        self._lock: asyncio.Lock | None = None
        #: ``clock`` instant of the last complete round (None before the first).
        self.checked_at: float | None = None

    def ensure_running(self) -> None:
        """Start the checks on the running loop unless they run there already."""
        loop = asyncio.get_running_loop()
        task = self._task
        if task is not None and not task.done() and task.get_loop() is loop:
            return
        self._lock = asyncio.Lock()
        # A fresh context: started from a request's task, it must not carry that request's
        # id and trace context into every later check's log lines.
        self._task = loop.create_task(
            self._run(), name=f"health-{self.model_name}", context=contextvars.Context()
        )

    def stop(self) -> None:
        """Stop the checks (from any loop or thread)."""
        task, self._task = self._task, None
        if task is None or task.done():
            return
        loop = task.get_loop()
        with contextlib.suppress(RuntimeError):  # its loop is closed: nothing runs it
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                task.cancel()
            elif not loop.is_closed():
                loop.call_soon_threadsafe(task.cancel)

    async def _run(self) -> None:
        while True:
            await self.check_all()
            await asyncio.sleep(self.interval)

    async def check_now_if_stale(self, max_age: float) -> None:
        """Run a round now unless one completed in the last ``max_age`` seconds."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            last = self.checked_at
            if last is None or self.balancer.clock() - last > max_age:
                await self.check_all()

    async def check_all(self) -> None:
        """Probe every upstream at once and record the verdicts."""
        upstreams = self.balancer.upstreams
        verdicts = await asyncio.gather(*(self.check(u) for u in upstreams))
        for upstream, verdict in zip(upstreams, verdicts, strict=True):
            self._record(upstream, verdict)
        self.checked_at = self.balancer.clock()
        self.balancer.wake()

    def _record(self, upstream: Upstream, verdict: Verdict) -> None:
        if upstream.healthy is not verdict.healthy:
            if verdict.healthy:
                log.info("model %s: %s is healthy", self.model_name, upstream.settings.label)
            else:
                log.warning(
                    "model %s: %s is unhealthy: %s",
                    self.model_name,
                    upstream.settings.label,
                    verdict.reason,
                )
        upstream.healthy, upstream.reason = verdict.healthy, verdict.reason
        upstream.breaker.health_checked(not verdict.down)

    async def check(self, upstream: Upstream) -> Verdict:
        """One probe of ``upstream``'s ``/models``."""
        settings = upstream.settings
        timeout = min(settings.timeout, PROBE_TIMEOUT)
        try:
            async with self._client().stream(
                "GET", settings.base_url + "/models", headers=settings.headers, timeout=timeout
            ) as response:
                body = await _read_bounded(response.aiter_raw(), MAX_MODELS_BYTES)
                status = response.status_code
        except httpx.HTTPError as exc:
            reason = transport_error(self.model_name, exc, quiet=True).message
            return Verdict(False, reason, down=True)
        if status in (401, 403):
            return Verdict(False, f"the upstream refused the API key (HTTP {status})")
        if status != 200:
            reason = f"the upstream's /models answered HTTP {status}"
            return Verdict(False, reason, down=status >= 500)
        listed = _model_ids(body)
        if listed is not None and settings.model not in listed:
            return Verdict(False, f"the upstream does not list model {settings.model!r}")
        return Verdict(True)


def pool_readiness(upstreams: Sequence[Upstream]) -> Readiness:
    """Ready when at least one upstream is healthy with its breaker not open."""
    if any(u.healthy and u.breaker.state != "open" for u in upstreams):
        return Readiness(True)
    if len(upstreams) == 1:
        only = upstreams[0]
        return Readiness(False, only.reason or "its circuit breaker is open")
    reasons = "; ".join(
        f"upstream {u.index}: {u.reason or 'circuit breaker open'}" for u in upstreams
    )
    return Readiness(False, f"no upstream is healthy ({reasons})")


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
