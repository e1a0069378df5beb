"""A small engine loop without a model, to drive a scheduler and check every plan it makes.

:class:`SimulatedEngine` applies each plan with the runner's own plan application
(:class:`~inferflux_core.engine.plan.PlanApplier`, as ``inferflux_core/engine/runner.py``
does) over a simulated backend: it hands out KV sequence ids to admitted sequences, "saves"
preempted ones and resumes them later, samples token 1 wherever a chunk asks for a sample,
and finishes a request once it has its tokens. Every plan is checked against the scheduler
contract before it is applied; a violation fails the test with the step and the reason.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from inferflux_core.contracts import (
    ScheduledSequence,
    Scheduler,
    SequenceChunk,
    SequenceStatus,
    StepPlan,
)
from inferflux_core.engine.plan import PlanApplier
from inferflux_core.errors import InferfluxError

RUNNING = SequenceStatus.RUNNING


@dataclass(slots=True)
class Request:
    """A simulated request: its sequence and how many tokens it wants."""

    sequence: ScheduledSequence
    max_tokens: int


@dataclass
class SimulatedEngine(PlanApplier[ScheduledSequence]):
    """Drives ``scheduler`` step by step; see the module docstring."""

    scheduler: Scheduler
    max_tokens: int = 4
    requests: dict[str, Request] = field(default_factory=dict)
    #: Request ids in the order they were first admitted.
    admitted: list[str] = field(default_factory=list)
    #: Request ids in the order they finished.
    finished: list[str] = field(default_factory=list)
    #: Request ids cancelled by :meth:`cancel`.
    cancelled: list[str] = field(default_factory=list)
    steps: int = 0
    _free_ids: list[int] = field(default_factory=list)
    _running: set[str] = field(default_factory=set)
    #: What a preempted sequence "saved", by request id.
    _saved: dict[str, tuple[int, int]] = field(default_factory=dict)
    _names: itertools.count[int] = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        self._free_ids = list(range(self.scheduler.limits.max_sequences))

    def submit(
        self,
        n_prompt: int,
        *,
        priority: int = 0,
        waited: float = 0.0,
        max_tokens: int | None = None,
        name: str | None = None,
        adapter: str | None = None,
    ) -> ScheduledSequence:
        """Queue a request with an ``n_prompt``-token prompt that arrived ``waited`` s ago
        (under LoRA ``adapter``, None: the base model)."""
        request_id = name or f"r{next(self._names)}"
        sequence = ScheduledSequence(
            request_id=request_id,
            prompt_tokens=list(range(n_prompt)),
            priority=priority,
            arrival=time.monotonic() - waited,
            adapter=adapter,
        )
        self.scheduler.add(sequence)
        self.requests[request_id] = Request(sequence, max_tokens or self.max_tokens)
        return sequence

    def cancel(self, sequence: ScheduledSequence) -> None:
        """What the engine does when a client goes away: finish it and free its id."""
        self._release(sequence)
        self._saved.pop(sequence.request_id, None)
        self.scheduler.finish(sequence)
        self.cancelled.append(sequence.request_id)

    def step(self) -> StepPlan:
        """Plan one step, check the plan, and apply it."""
        before = {r for r in self._running if self.requests[r].sequence.prefill_done}
        plan = self.scheduler.plan_step()
        self.steps += 1
        self._check(plan, before)
        self.apply(plan)
        return plan

    def run(self, max_steps: int = 1000) -> None:
        """Step until every request has finished or was cancelled; fail after ``max_steps``."""
        while len(self.finished) + len(self.cancelled) < len(self.requests):
            if self.steps >= max_steps:
                waiting = sorted(set(self.requests) - {*self.finished, *self.cancelled})
                raise AssertionError(f"not finished after {max_steps} steps: {waiting}")
            self.step()

    @property
    def running(self) -> list[ScheduledSequence]:
        """Sequences holding a sequence id now."""
        return [self.requests[r].sequence for r in sorted(self._running)]

    # --- the plan application's parts (see inferflux_core.engine.plan) ---------------------

    def preempt(self, sequence: ScheduledSequence) -> None:
        """Free the sequence's id and remember how far it got."""
        self._release(sequence)
        self._saved[sequence.request_id] = (sequence.n_prefilled, len(sequence.generated))

    def admit(self, sequence: ScheduledSequence) -> ScheduledSequence:
        """Give a newly admitted (or resumed) sequence an id."""
        if sequence.request_id not in self._running:
            saved = self._saved.pop(sequence.request_id, None)
            assert saved in (None, (sequence.n_prefilled, len(sequence.generated))), (
                f"step {self.steps}: {sequence.request_id} changed while preempted"
            )
            self._running.add(sequence.request_id)
            sequence.seq_id = self._free_ids.pop(0)
            if sequence.request_id not in self.admitted:
                self.admitted.append(sequence.request_id)
        return sequence

    def decode(
        self, chunks: Sequence[SequenceChunk], fed: Sequence[ScheduledSequence]
    ) -> dict[int, int]:
        """Sample token 1 for every chunk that asks for a sample."""
        return {chunk.seq_id: 1 for chunk in chunks if chunk.sample}

    def prefilled(self, sequence: ScheduledSequence, chunk: SequenceChunk) -> None:
        """Nothing to remember: the simulated KV holds no prefixes."""

    def accept(self, sequence: ScheduledSequence, token: int) -> None:
        """Append ``token``; finish the request once it has its tokens."""
        sequence.generated.append(token)
        if len(sequence.generated) >= self.requests[sequence.request_id].max_tokens:
            self._release(sequence)
            self.scheduler.finish(sequence)
            self.finished.append(sequence.request_id)

    def fail(self, sequence: ScheduledSequence, error: InferfluxError) -> None:
        """End a sequence that failed on its own: free it, as a finished one."""
        self._release(sequence)
        self.scheduler.finish(sequence)
        self.finished.append(sequence.request_id)

    def _release(self, sequence: ScheduledSequence) -> None:
        if sequence.request_id in self._running:
            self._running.discard(sequence.request_id)
            assert sequence.seq_id is not None
            self._free_ids.append(sequence.seq_id)
            sequence.seq_id = None

    def _check(self, plan: StepPlan, decoding: set[str]) -> None:
        """Fail unless ``plan`` keeps the scheduler contract."""
        limits = self.scheduler.limits
        where = f"step {self.steps}"
        ids = [c.sequence.request_id for c in plan.chunks]
        preempted = {s.request_id for s in plan.preempt}
        assert len(ids) == len(set(ids)), f"{where}: a sequence has two chunks: {ids}"
        assert not preempted & set(ids), f"{where}: a preempted sequence also runs"
        assert limits.preemption or not preempted, f"{where}: preempted without preemption"
        for sequence in plan.preempt:
            assert sequence.status is SequenceStatus.WAITING, f"{where}: preempted but not WAITING"
        total = 0
        for chunk in plan.chunks:
            sequence, n = chunk.sequence, chunk.n_tokens
            assert sequence.status is SequenceStatus.RUNNING, f"{where}: {sequence.request_id}"
            if sequence.prefill_done:
                assert n == 1, f"{where}: {sequence.request_id} decodes {n} tokens, not 1"
            else:
                most = min(sequence.remaining_prompt, limits.prefill_chunk)
                assert 1 <= n <= most, f"{where}: prompt chunk of {n} tokens (at most {most})"
            total += n
        assert total <= limits.token_budget, f"{where}: {total} tokens > {limits.token_budget}"
        running = [r for r, q in self.requests.items() if q.sequence.status is RUNNING]
        assert len(running) <= limits.max_sequences, f"{where}: {len(running)} sequences run"
        assert self.scheduler.running_count == len(running), f"{where}: running_count is off"
        adapters = {c.sequence.adapter for c in plan.chunks}
        assert len(adapters) <= 1, f"{where}: one step mixes adapters {sorted(map(str, adapters))}"
        if adapters:  # sequences of other adapters wait for their turn
            decoding = {r for r in decoding if self.requests[r].sequence.adapter in adapters}
        skipped = decoding - preempted - set(ids)
        assert not skipped, f"{where}: running sequences got no decode step: {sorted(skipped)}"
        kv = sum(self.requests[r].sequence.kv_tokens for r in running)
        assert kv <= limits.kv_capacity or len(running) == 1, f"{where}: {kv} KV cells in use"
