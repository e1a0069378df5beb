"""Choosing an upstream of a pool for each attempt of a request.

The candidates are the upstreams not yet tried for the request whose breaker lets a request
through; of those, the healthy ones (health unknown counts as healthy) when there are any.
The one with the fewest outstanding requests and a free slot (under its ``max_concurrency``)
is chosen; ties go round-robin. With candidates but no free slot, the request waits for one
(bounded); with no candidate at all it fails at once.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from inferflux_plugins.backends.openai_upstream.breaker import CircuitBreaker, Outcome
from inferflux_plugins.backends.openai_upstream.pool_config import UpstreamSettings


@dataclass(eq=False)
class Upstream:
    """One upstream of a pool and what the gateway knows of it now."""

    settings: UpstreamSettings
    breaker: CircuitBreaker
    #: Requests sent to it and not ended yet.
    outstanding: int = 0
    #: The last health check's verdict (None before the first).
    healthy: bool | None = None
    #: Why the last health check failed.
    reason: str | None = None
    #: Requests (attempts) sent to it in all.
    sent: int = 0

    @property
    def index(self) -> int:
        """Its position in the pool."""
        return self.settings.index

    @property
    def full(self) -> bool:
        """Whether every one of its slots is taken."""
        return self.outstanding >= self.settings.max_concurrency

    @property
    def serving(self) -> bool:
        """Healthy (or not checked yet) with a breaker that is not open."""
        return self.healthy is not False and self.breaker.state != "open"


@dataclass(frozen=True, slots=True)
class Lease:
    """One attempt's hold on an upstream's slot; give it back with :meth:`Balancer.release`."""

    upstream: Upstream
    probe: bool


class NoUpstreamError(Exception):
    """No upstream may take the request (all tried, or their breakers open)."""

    def __init__(self, retry_after: float) -> None:
        super().__init__("no upstream can take the request")
        self.retry_after = retry_after


class SlotTimeoutError(Exception):
    """Every candidate upstream stayed full for the whole wait."""


@dataclass(eq=False)
class Balancer:
    """Least-outstanding-requests balancing over a pool; see the module docstring."""

    upstreams: Sequence[Upstream]
    clock: Callable[[], float] = time.monotonic
    _next: int = 0
    _waiters: list[asyncio.Future[None]] = field(default_factory=list)
    #: Requests waiting for a free slot now.
    waiting: int = 0

    def candidates(self, exclude: set[int]) -> list[Upstream]:
        """The upstreams a request that tried ``exclude`` may go to, full or not."""
        allowed = [u for u in self.upstreams if u.index not in exclude and u.breaker.allows()]
        healthy = [u for u in allowed if u.healthy is not False]
        return healthy or allowed

    def pick(self, exclude: set[int]) -> Upstream | None:
        """The candidate with the fewest outstanding requests and a free slot (ties
        round-robin), or None."""
        free = [u for u in self.candidates(exclude) if not u.full]
        if not free:
            return None
        least = min(u.outstanding for u in free)
        tied = [u for u in free if u.outstanding == least]
        size = len(self.upstreams)
        chosen = min(tied, key=lambda u: (u.index - self._next) % size)
        self._next = (chosen.index + 1) % size
        return chosen

    def try_acquire(self, exclude: set[int]) -> Lease | None:
        """A slot on the best candidate now, or None."""
        upstream = self.pick(exclude)
        if upstream is None:
            return None
        upstream.outstanding += 1
        upstream.sent += 1
        return Lease(upstream, upstream.breaker.begin())

    async def acquire(self, exclude: set[int], until: float) -> Lease:
        """A slot on the best candidate, waiting for one up to the ``clock`` instant
        ``until``; NoUpstreamError when no upstream may take it, SlotTimeoutError when all
        stayed full."""
        while True:
            lease = self.try_acquire(exclude)
            if lease is not None:
                return lease
            if not self.candidates(exclude):
                raise NoUpstreamError(self.retry_after())
            remaining = until - self.clock()
            if remaining <= 0:
                raise SlotTimeoutError
            await self._wait(remaining)

    async def _wait(self, seconds: float) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self.waiting += 1
        try:
            await asyncio.wait({waiter}, timeout=seconds)
        finally:
            self.waiting -= 1
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def release(self, lease: Lease, outcome: Outcome) -> None:
        """End ``lease``'s attempt with ``outcome`` and wake whoever waits for a slot."""
        lease.upstream.outstanding -= 1
        lease.upstream.breaker.settle(outcome, lease.probe)
        self.wake()

    def wake(self) -> None:
        """Let waiting requests look again (a slot was freed, a health state changed)."""
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def retry_after(self) -> float:
        """Whole seconds (at least 1) until some open breaker lets a probe through."""
        waits = [u.breaker.retry_after() for u in self.upstreams]
        soonest = min((w for w in waits if w > 0), default=1.0)
        return float(max(1, math.ceil(soonest)))
