"""A circuit breaker per upstream: consecutive failures take it out, one probe brings it back.

``closed``: requests flow; ``failures`` consecutive failures open it. ``open``: no request is
sent for ``cooldown`` seconds. Then it is ``half_open``: the next request (or health check)
is the probe: its success closes the breaker, its failure opens it for another cooldown.
A health check that finds the upstream down (no answer, a 5xx) counts as a failure too, so a
dead upstream is taken out even when no request is sent to it.
While a probe request is in flight no other request is let through. The clock is injected
so the logic is tested without waiting.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

BreakerState = Literal["closed", "open", "half_open"]
#: What one request to the upstream came to, for the breaker.
Outcome = Literal["success", "failure", "neutral"]


class CircuitBreaker:
    """One upstream's breaker; see the module docstring."""

    def __init__(
        self, failures: int, cooldown: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.failures_to_open = failures
        self.cooldown = cooldown
        self._clock = clock
        self._state: BreakerState = "closed"
        self._opened_at = 0.0
        self._probing = False
        #: Consecutive failures so far (reset by a success).
        self.consecutive_failures = 0

    @property
    def state(self) -> BreakerState:
        """``closed``, ``open``, or ``half_open`` once the cooldown has passed."""
        if self._state == "open" and self._clock() >= self._opened_at + self.cooldown:
            self._state = "half_open"
        return self._state

    def allows(self) -> bool:
        """Whether a request may be sent now (in ``half_open``: only while no probe runs)."""
        state = self.state
        return state == "closed" or (state == "half_open" and not self._probing)

    def retry_after(self) -> float:
        """Seconds until an open breaker lets a probe through (0 when it lets requests)."""
        if self.state != "open":
            return 0.0
        return max(0.0, self._opened_at + self.cooldown - self._clock())

    def begin(self) -> bool:
        """A request is being sent; True if it is the half-open breaker's probe."""
        if self.state == "half_open":
            self._probing = True
            return True
        return False

    def settle(self, outcome: Outcome, probe: bool) -> None:
        """Record how a request ended; ``probe`` is what :meth:`begin` returned for it."""
        if probe:
            self._probing = False
        if outcome == "success":
            self._close()
        elif outcome == "failure":
            self.consecutive_failures += 1
            if self.state == "half_open" or self.consecutive_failures >= self.failures_to_open:
                self._open()

    def health_checked(self, up: bool) -> None:
        """A health check's result (``up``: the upstream answered, not with a 5xx). In
        ``half_open`` it is the probe (unless a request is); in ``closed`` a check that found
        it down counts as a failure (one that found it up resets nothing: an upstream may
        list its models and still fail every request)."""
        state = self.state
        if state == "half_open" and not self._probing:
            if up:
                self._close()
            else:
                self._open()
        elif state == "closed" and not up:
            self.consecutive_failures += 1
            if self.consecutive_failures >= self.failures_to_open:
                self._open()

    def _open(self) -> None:
        self._state = "open"
        self._opened_at = self._clock()

    def _close(self) -> None:
        self._state = "closed"
        self.consecutive_failures = 0
