"""Continuous batching: sequences join and leave the running batch between steps."""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import threading
from collections.abc import Sequence
from typing import Any

from inferflux_core.contracts import (
    ScheduledChunk,
    ScheduledSequence,
    Scheduler,
    SchedulerLimits,
    SequenceStatus,
)
from inferflux_core.errors import QueueFullError


class ContinuousBatchingScheduler(Scheduler):
    """Admits by priority then arrival; decodes every running sequence each step.

    Each step first gives one token to every running sequence that has finished its prompt,
    so streams never stall behind a long prompt; the rest of the token budget prefills prompts
    in chunks of ``prefill_chunk`` tokens (the last one shorter), oldest admission first. Chunk
    boundaries never depend on what else runs, so a sequence is computed the same way alone or
    in a batch. A waiting sequence is admitted while fewer than ``max_sequences`` run and its
    prompt fits in the free KV cells.
    """

    def __init__(self, limits: SchedulerLimits, **options: Any) -> None:
        if options:
            raise TypeError(f"unknown options: {', '.join(sorted(options))}")
        # A whole chunk must always fit beside a full decode step, or prefill could starve.
        floor = limits.prefill_chunk + limits.max_sequences
        if limits.token_budget < floor:
            limits = dataclasses.replace(limits, token_budget=floor)
        super().__init__(limits)
        self._lock = threading.Lock()
        self._waiting: list[tuple[int, float, int, ScheduledSequence]] = []
        self._order = itertools.count()
        self._running: list[ScheduledSequence] = []

    def add(self, sequence: ScheduledSequence) -> None:
        """Queue ``sequence``; QueueFullError once ``max_queue`` sequences wait."""
        with self._lock:
            if len(self._waiting) >= self.limits.max_queue:
                raise QueueFullError(
                    f"the request queue is full ({self.limits.max_queue} waiting); retry later",
                    headers={"Retry-After": "1"},
                )
            sequence.status = SequenceStatus.WAITING
            entry = (-sequence.priority, sequence.arrival, next(self._order), sequence)
            heapq.heappush(self._waiting, entry)

    def plan_step(self) -> Sequence[ScheduledChunk]:
        """Decode chunks for prefilled sequences, then prompt chunks within the budget."""
        with self._lock:
            chunks = [ScheduledChunk(s, 1) for s in self._running if s.prefill_done]
            budget = self.limits.token_budget - len(chunks)
            self._admit()
            for sequence in self._running:
                if not sequence.prefill_done:
                    n_tokens = min(sequence.remaining_prompt, self.limits.prefill_chunk)
                    if n_tokens > budget:
                        break
                    chunks.append(ScheduledChunk(sequence, n_tokens))
                    budget -= n_tokens
            return chunks

    def finish(self, sequence: ScheduledSequence) -> None:
        """Drop ``sequence`` from the running batch or the queue."""
        with self._lock:
            if sequence.status is SequenceStatus.RUNNING:
                self._running.remove(sequence)
            elif sequence.status is SequenceStatus.WAITING:
                self._waiting = [e for e in self._waiting if e[3] is not sequence]
                heapq.heapify(self._waiting)
            sequence.status = SequenceStatus.FINISHED

    @property
    def waiting_count(self) -> int:
        """Sequences queued and not yet admitted."""
        return len(self._waiting)

    @property
    def running_count(self) -> int:
        """Sequences admitted and not yet finished."""
        return len(self._running)

    def _admit(self) -> None:
        kv_used = sum(s.kv_tokens for s in self._running)
        # Keep a cell per running sequence free so the next decode step always fits.
        headroom = self.limits.max_sequences
        while self._waiting and len(self._running) < self.limits.max_sequences:
            candidate = self._waiting[0][3]
            if self._running and kv_used + candidate.kv_tokens + headroom > self.limits.kv_capacity:
                break
            heapq.heappop(self._waiting)
            candidate.status = SequenceStatus.RUNNING
            self._running.append(candidate)
            kv_used += candidate.kv_tokens
