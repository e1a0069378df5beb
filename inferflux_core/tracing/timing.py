"""When a request reached each phase, on the ``time.monotonic`` clock, and those moments as
the epoch nanoseconds spans take."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RequestTiming:
    """The moments of one request's life (``time.monotonic()``; 0.0: not reached).

    ``submitted``: queued for a KV sequence; ``scheduled``: first given one (its prefill
    starts); ``first_token``: its first token sampled; ``finished``: released (finished,
    cancelled or failed). A preempted request keeps its first ``scheduled``.
    """

    submitted: float = 0.0
    scheduled: float = 0.0
    first_token: float = 0.0
    finished: float = 0.0


def combined(timings: Iterable[RequestTiming]) -> RequestTiming:
    """One timing for the sequences of one request (``n > 1``): each phase from the first
    sequence to reach it; finished when the last one finished."""
    items = list(timings)

    def earliest(values: Iterable[float]) -> float:
        reached = [v for v in values if v > 0.0]
        return min(reached) if reached else 0.0

    finished = [t.finished for t in items]
    return RequestTiming(
        submitted=earliest(t.submitted for t in items),
        scheduled=earliest(t.scheduled for t in items),
        first_token=earliest(t.first_token for t in items),
        finished=max(finished) if finished and all(finished) else 0.0,
    )


class EpochClock:
    """Turns ``time.monotonic()`` moments into epoch nanoseconds (the offset between the two
    clocks taken once, when made)."""

    def __init__(self) -> None:
        self._offset_ns = time.time_ns() - time.monotonic_ns()

    def ns(self, monotonic: float) -> int:
        """``monotonic`` seconds as nanoseconds since the epoch."""
        return int(monotonic * 1e9) + self._offset_ns
