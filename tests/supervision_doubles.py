"""Test doubles that fail on purpose, registered as a plugin: the real continuous scheduler and
the real llama.cpp backend, each with a switch to raise where a test says.

``failing_continuous`` (a scheduler) refuses a request in ``add`` (after queueing it, the
harder case to clean up) when the request has the stop string :data:`FAIL_ADD`, and fails
every ``plan_step`` while a request with the stop string :data:`FAIL_PLAN` waits (as the real
scheduler did for ``"priority": 2**1024``). ``failing_llama_cpp`` (a backend) raises the
exceptions put in its ``decode_failures``, one per ``decode`` call, then decodes normally; and
its llguidance sampler fails the next ``guidance_failures`` guided samples as a matcher that
cannot go on does (the backend's own handling of that failure then runs, unchanged).
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Sequence
from typing import Any

from inferflux_core.contracts import (
    BackendSpec,
    ScheduledSequence,
    SchedulerLimits,
    SequenceChunk,
    SequenceStatus,
    StepPlan,
)
from inferflux_core.engine.stream import EngineSequence
from inferflux_core.hookspecs import hookimpl
from inferflux_plugins.backends.llama_cpp.backend import LlamaCppBackend
from inferflux_plugins.backends.llama_cpp.guidance import GuidanceFailure
from inferflux_plugins.schedulers.continuous import ContinuousBatchingScheduler

INFERFLUX_HOOKSPEC_VERSION = 1

FAIL_ADD = "<inferflux-test:fail-add>"
FAIL_PLAN = "<inferflux-test:fail-plan>"


class StepThreadKiller(BaseException):
    """What no ``except Exception`` catches: it ends the step thread."""


def _marked(sequence: ScheduledSequence, marker: str) -> bool:
    # A test double may peek at the engine's side of a sequence; a real scheduler never does.
    return isinstance(sequence, EngineSequence) and marker in sequence.state.request.stop


class FailingScheduler(ContinuousBatchingScheduler):
    """The continuous scheduler, failing for requests marked with a stop string."""

    def __init__(self, limits: SchedulerLimits, **options: Any) -> None:
        super().__init__(limits, **options)
        self._poison_lock = threading.Lock()
        self._poisoned: list[ScheduledSequence] = []

    def add(self, sequence: ScheduledSequence) -> None:
        """Queue ``sequence``; then raise if it is marked :data:`FAIL_ADD`."""
        super().add(sequence)
        if _marked(sequence, FAIL_PLAN):
            with self._poison_lock:
                self._poisoned.append(sequence)
        if _marked(sequence, FAIL_ADD):
            raise RuntimeError("test double: add refuses this request")

    def plan_step(self) -> StepPlan:
        """Raise while a :data:`FAIL_PLAN` request waits; plan normally otherwise."""
        with self._poison_lock:
            self._poisoned = [s for s in self._poisoned if s.status is SequenceStatus.WAITING]
            poisoned = bool(self._poisoned)
        if poisoned:
            raise OverflowError("test double: cannot rank a waiting request")
        return super().plan_step()


class FailingGuidedSampler:
    """Wraps the backend's llguidance sampler: fails the next ``armed`` samples."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.armed = 0

    def sample(self, chain: Any, matcher: Any, ctx: Any, index: int) -> int:
        """Raise :class:`GuidanceFailure` while armed; else sample as the real sampler."""
        if self.armed:
            self.armed -= 1
            raise GuidanceFailure("test double: the matcher cannot go on")
        return int(self.inner.sample(chain, matcher, ctx, index))


class FailingBackend(LlamaCppBackend):
    """The llama.cpp backend; ``decode`` first raises what ``decode_failures`` holds."""

    def __init__(self, spec: BackendSpec) -> None:
        super().__init__(spec)
        self.decode_failures: collections.deque[BaseException] = collections.deque()
        self.decode_calls = 0
        self.guided = FailingGuidedSampler(self._guided)
        self._guided = self.guided  # type: ignore[assignment]

    def decode(self, chunks: Sequence[SequenceChunk]) -> dict[int, int]:
        """Raise the next armed failure, if any; else decode."""
        self.decode_calls += 1
        if self.decode_failures:
            raise self.decode_failures.popleft()
        return super().decode(chunks)


@hookimpl
def register_schedulers() -> dict[str, type[ContinuousBatchingScheduler]]:
    """The failing scheduler, as ``failing_continuous``."""
    return {"failing_continuous": FailingScheduler}


@hookimpl
def register_backends() -> dict[str, type[LlamaCppBackend]]:
    """The failing backend, as ``failing_llama_cpp``."""
    return {"failing_llama_cpp": FailingBackend}
