"""A shortest-job-first scheduler, written from the ``Scheduler`` contract alone.

Configure it with ``scheduler: {name: sjf}``. Among waiting requests it admits the one with
the shortest prompt first (the only job size a scheduler knows before decoding), ties broken
by arrival; a request that waited ``max_wait_seconds`` (an option, default 30) goes first
regardless, so long prompts never starve. Each step decodes one token for every running
sequence and fills the rest of the token budget with prompt chunks, shortest first.
"""

from __future__ import annotations

import threading
import time

from pydantic import Field

from inferflux_core.contracts import (
    PluginOptions,
    ScheduledChunk,
    ScheduledSequence,
    Scheduler,
    SchedulerLimits,
    SequenceStatus,
    StepPlan,
)
from inferflux_core.errors import QueueFullError
from inferflux_core.hookspecs import hookimpl

INFERFLUX_HOOKSPEC_VERSION = 1


class SjfOptions(PluginOptions):
    """``scheduler.options`` of ``sjf``: checked by inferflux before the scheduler is built."""

    max_wait_seconds: float = Field(
        30.0, gt=0, description="seconds after which a waiting request goes first regardless"
    )


class ShortestJobFirstScheduler(Scheduler):
    """Admits the shortest waiting prompt first; see the module docstring."""

    options_model = SjfOptions

    def __init__(self, limits: SchedulerLimits, *, max_wait_seconds: float = 30.0) -> None:
        super().__init__(limits)
        self.max_wait_seconds = float(max_wait_seconds)
        self._lock = threading.Lock()
        self._waiting: list[ScheduledSequence] = []
        self._running: list[ScheduledSequence] = []

    def add(self, sequence: ScheduledSequence) -> None:
        """Queue ``sequence``; QueueFullError (429) once ``max_queue`` wait."""
        with self._lock:
            if len(self._waiting) >= self.limits.max_queue:
                raise QueueFullError("the request queue is full; retry later")
            sequence.status = SequenceStatus.WAITING
            self._waiting.append(sequence)

    def plan_step(self) -> StepPlan:
        """Decode every running sequence, admit the shortest jobs, prefill within the budget."""
        with self._lock:
            chunks = [ScheduledChunk(s, 1) for s in self._running if s.prefill_done]
            budget = max(self.limits.token_budget - len(chunks), self.limits.prefill_chunk)
            self._admit()
            prefilling = [s for s in self._running if not s.prefill_done]
            for sequence in sorted(prefilling, key=lambda s: s.remaining_prompt):
                n_tokens = min(sequence.remaining_prompt, self.limits.prefill_chunk, budget)
                if n_tokens <= 0:
                    break
                chunks.append(ScheduledChunk(sequence, n_tokens))
                budget -= n_tokens
            return StepPlan(chunks)

    def finish(self, sequence: ScheduledSequence) -> None:
        """Forget ``sequence``, waiting or running."""
        with self._lock:
            for queue in (self._running, self._waiting):
                if sequence in queue:
                    queue.remove(sequence)
            sequence.status = SequenceStatus.FINISHED

    @property
    def waiting_count(self) -> int:
        """Sequences queued and not yet admitted."""
        return len(self._waiting)

    @property
    def running_count(self) -> int:
        """Sequences admitted and not yet finished."""
        return len(self._running)

    def admission_order(self) -> list[ScheduledSequence]:
        """The waiting sequences in the order they would be admitted."""
        with self._lock:
            return sorted(self._waiting, key=self._job_key)

    def _job_key(self, sequence: ScheduledSequence) -> tuple[bool, int, float]:
        overdue = time.monotonic() - sequence.arrival >= self.max_wait_seconds
        return (not overdue, len(sequence.prompt_tokens), sequence.arrival)

    def _admit(self) -> None:
        kv_used = sum(s.kv_tokens for s in self._running)
        for candidate in sorted(self._waiting, key=self._job_key):
            if len(self._running) >= self.limits.max_sequences:
                return
            # Keep one free KV cell per running sequence for its next decode step.
            needed = kv_used + candidate.kv_tokens + self.limits.max_sequences
            if self._running and needed > self.limits.kv_capacity:
                return
            self._waiting.remove(candidate)
            candidate.status = SequenceStatus.RUNNING
            self._running.append(candidate)
            kv_used += candidate.kv_tokens


@hookimpl
def register_schedulers() -> dict[str, type[Scheduler]]:
    """The shortest-job-first scheduler, as ``sjf``."""
    return {"sjf": ShortestJobFirstScheduler}
