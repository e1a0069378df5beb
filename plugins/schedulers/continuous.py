"""Continuous batching: sequences join and leave the running batch between steps."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from pydantic import Field

from inferflux_core.contracts import (
    PluginOptions,
    ScheduledChunk,
    ScheduledSequence,
    Scheduler,
    SchedulerLimits,
    SequenceStatus,
    StepPlan,
    parse_options,
)
from inferflux_core.errors import QueueFullError

log = logging.getLogger(__name__)

#: Where the options sit in the configuration, for error messages.
OPTIONS_KEY = "scheduler.options"


class ContinuousOptions(PluginOptions):
    """``scheduler.options`` of the ``continuous`` scheduler."""

    prefill_sequences: int = Field(
        1,
        ge=0,
        description="prompts fed per step (0: as many as the budget allows); 1 lets prompts "
        "that arrive together reach their first token one after the other instead of all at "
        "the end",
    )
    preemption: bool = Field(
        False,
        description="let higher-priority requests preempt running ones (KV saved and restored "
        "later), where the backend can",
    )
    aging_per_second: float = Field(
        0.1, ge=0, description="priority a waiting request gains per second"
    )
    timeslice_tokens: int = Field(
        0,
        ge=0,
        description="with `preemption`, tokens a sequence decodes before yielding to an equal "
        "or higher waiting one (0: off)",
    )


class ContinuousBatchingScheduler(Scheduler):
    """Admits by priority with aging; decodes every running sequence each step.

    Each step first gives one token to every running sequence that has finished its prompt,
    so streams never stall behind a long prompt; the rest of the token budget prefills prompts
    in chunks of ``prefill_chunk`` tokens (the last one shorter), oldest admission first, at most
    ``prefill_sequences`` prompts per step (0: no limit). Chunk
    boundaries never depend on what else runs, so a sequence is computed the same way alone or
    in a batch. A waiting sequence is admitted while fewer than ``max_sequences`` run and its
    prompt fits in the free KV cells; the one with the highest priority plus
    ``aging_per_second`` times its wait goes first, so low priority never starves.

    With preemption, a waiting sequence of strictly higher priority than a running one takes
    its place, and with a timeslice a sequence that decoded ``timeslice_tokens`` yields to an
    equal or higher waiting one. A preempted sequence queues again as a new arrival.
    Preemption needs both the ``preemption`` option and an engine that can preempt
    (``limits.preemption``). The options are :class:`ContinuousOptions`.

    A step feeds the running sequences of one LoRA adapter (``ScheduledSequence.adapter``;
    the base model is one more group): when several run, adapters take turns step by step,
    the one served longest ago first (see docs/adapters.md).
    """

    options_model = ContinuousOptions
    groups_adapters = True

    def __init__(
        self,
        limits: SchedulerLimits,
        *,
        clock: Callable[[], float] = time.monotonic,
        **options: Any,
    ) -> None:
        #: The validated options (:class:`ContinuousOptions`).
        self.options = parse_options(ContinuousOptions, options, OPTIONS_KEY)
        if self.options.preemption and not limits.preemption:
            log.warning("the backend cannot preempt sequences; preemption is off")
        # A whole chunk must always fit beside a full decode step, or prefill could starve.
        floor = limits.prefill_chunk + limits.max_sequences
        if limits.token_budget < floor:
            limits = dataclasses.replace(limits, token_budget=floor)
        super().__init__(limits)
        self._clock = clock
        self._preemption = self.options.preemption and limits.preemption
        self._aging = self.options.aging_per_second
        self._lock = threading.Lock()
        self._waiting: list[ScheduledSequence] = []
        self._running: list[ScheduledSequence] = []
        #: The step (counted from 1) each running adapter was last fed in.
        self._served_at: dict[str | None, int] = {}
        self._steps = 0

    def add(self, sequence: ScheduledSequence) -> None:
        """Queue ``sequence``; QueueFullError once ``max_queue`` sequences wait."""
        with self._lock:
            if len(self._waiting) >= self.limits.max_queue:
                raise QueueFullError(
                    f"the request queue is full ({self.limits.max_queue} waiting); retry later",
                    headers={"Retry-After": "1"},
                )
            sequence.status = SequenceStatus.WAITING
            self._waiting.append(sequence)

    def plan_step(self) -> StepPlan:
        """Preemptions, then decode chunks, admissions and prompt chunks within the budget."""
        with self._lock:
            now = self._clock()
            preempt = self._preemptions(now) if self._preemption else []
            turn = self._adapter_turn()
            chunks = [
                ScheduledChunk(s, 1)
                for s in self._running
                if s.prefill_done and (turn is None or s.adapter == turn[0])
            ]
            for chunk in chunks:
                chunk.sequence.slice_tokens += 1
            budget = self.limits.token_budget - len(chunks)
            self._admit(now)
            turn = turn or self._adapter_turn()
            prompts_left = self.options.prefill_sequences or len(self._running)
            for sequence in self._running:
                if not sequence.prefill_done and turn is not None and sequence.adapter == turn[0]:
                    n_tokens = min(sequence.remaining_prompt, self.limits.prefill_chunk)
                    if n_tokens > budget or prompts_left == 0:
                        break
                    chunks.append(ScheduledChunk(sequence, n_tokens))
                    budget -= n_tokens
                    prompts_left -= 1
            return StepPlan(chunks, preempt)

    def finish(self, sequence: ScheduledSequence) -> None:
        """Drop ``sequence`` from the running batch or the queue."""
        with self._lock:
            if sequence.status is SequenceStatus.RUNNING:
                self._running.remove(sequence)
            elif sequence.status is SequenceStatus.WAITING:
                self._waiting.remove(sequence)
            sequence.status = SequenceStatus.FINISHED

    @property
    def waiting_count(self) -> int:
        """Sequences queued and not yet admitted."""
        return len(self._waiting)

    @property
    def running_count(self) -> int:
        """Sequences admitted and not yet finished."""
        return len(self._running)

    def _adapter_turn(self) -> tuple[str | None] | None:
        """The adapter whose running sequences this step feeds (in a 1-tuple; None if none
        run). Adapters take turns: the one served longest ago goes next (ties: the one with
        the oldest sequence), so every adapter's sequences step at least every k-th step
        when k adapters run."""
        oldest: dict[str | None, float] = {}
        for sequence in self._running:
            arrival = oldest.get(sequence.adapter)
            if arrival is None or sequence.arrival < arrival:
                oldest[sequence.adapter] = sequence.arrival
        if not oldest:
            return None
        served = {g: step for g, step in self._served_at.items() if g in oldest}
        group = min(oldest, key=lambda g: (served.get(g, -1), oldest[g]))
        self._steps += 1
        served[group] = self._steps
        self._served_at = served
        return (group,)

    def _urgency(self, sequence: ScheduledSequence, now: float) -> float:
        return sequence.priority + self._aging * (now - sequence.arrival)

    def _next_waiting(self, now: float) -> ScheduledSequence | None:
        if not self._waiting:
            return None
        return max(self._waiting, key=lambda s: (self._urgency(s, now), -s.arrival))

    def _admit(self, now: float) -> None:
        kv_used = sum(s.kv_tokens for s in self._running)
        # Keep a cell per running sequence free so the next decode step always fits.
        headroom = self.limits.max_sequences
        while len(self._running) < self.limits.max_sequences:
            candidate = self._next_waiting(now)
            if candidate is None:
                return
            if self._running and kv_used + candidate.kv_tokens + headroom > self.limits.kv_capacity:
                return
            self._waiting.remove(candidate)
            candidate.status = SequenceStatus.RUNNING
            candidate.slice_tokens = 0
            self._running.append(candidate)
            kv_used += candidate.kv_tokens

    def _preemptions(self, now: float) -> list[ScheduledSequence]:
        """Running sequences to yield their slots to more urgent waiting ones."""
        if len(self._running) < self.limits.max_sequences:
            return []
        preempted: list[ScheduledSequence] = []
        pending = sorted(self._waiting, key=lambda s: (-self._urgency(s, now), s.arrival))
        for waiting in pending:
            victim = self._victim(waiting, now)
            if victim is None:
                break
            self._running.remove(victim)
            victim.status = SequenceStatus.WAITING
            victim.preemptions += 1
            # Re-queued as if it had just arrived: behind its peers, its aging starting over,
            # so it cannot bounce straight back in ahead of the request it yielded to.
            victim.arrival = now
            self._waiting.append(victim)
            preempted.append(victim)
        return preempted

    def _victim(self, waiting: ScheduledSequence, now: float) -> ScheduledSequence | None:
        """The running sequence ``waiting`` may displace, if any."""
        by_priority = min(self._running, key=lambda s: (s.priority, -s.arrival))
        if waiting.priority > by_priority.priority:
            return by_priority
        slice_tokens = self.options.timeslice_tokens
        if slice_tokens <= 0:
            return None
        expired = [
            s
            for s in self._running
            if s.slice_tokens >= slice_tokens and s.priority <= self._urgency(waiting, now)
        ]
        return max(expired, key=lambda s: s.slice_tokens) if expired else None
