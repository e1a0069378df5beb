"""The continuous-batching scheduler: admission, budget, priority, aging, preemption."""

from __future__ import annotations

from typing import Any

import pytest

from inferflux_core.contracts import (
    ScheduledChunk,
    ScheduledSequence,
    SchedulerLimits,
    SequenceStatus,
)
from inferflux_core.errors import ConfigError, QueueFullError
from inferflux_plugins.schedulers.continuous import ContinuousBatchingScheduler


class Clock:
    """A hand-driven clock."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _limits(**kw: Any) -> SchedulerLimits:
    base: dict[str, Any] = dict(
        max_sequences=2,
        context_length=1000,
        kv_capacity=1000,
        token_budget=64,
        prefill_chunk=16,
        max_queue=3,
    )
    base.update(kw)
    return SchedulerLimits(**base)


def _scheduler(limits: SchedulerLimits, **options: Any) -> ContinuousBatchingScheduler:
    """The scheduler with ``options``; no aging and no prompt limit unless a test asks."""
    options = {"prefill_sequences": 0, "aging_per_second": 0.0, **options}
    return ContinuousBatchingScheduler(limits, **options)


def _seq(
    name: str, n_prompt: int = 10, priority: int = 0, arrival: float = 0.0
) -> ScheduledSequence:
    return ScheduledSequence(
        request_id=name, prompt_tokens=list(range(n_prompt)), priority=priority, arrival=arrival
    )


def _run(scheduler: ContinuousBatchingScheduler) -> list[ScheduledChunk]:
    """Plan one step and play the engine's part: prefill chunks, decode one token each."""
    plan = scheduler.plan_step()
    for chunk in plan.chunks:
        sequence = chunk.sequence
        if sequence.prefill_done:
            sequence.generated.append(1)
        else:
            sequence.n_prefilled += chunk.n_tokens
            if sequence.prefill_done:
                sequence.generated.append(1)
    return list(plan.chunks)


def _names(chunks: list[ScheduledChunk]) -> list[str]:
    return [c.sequence.request_id for c in chunks]


def test_admits_at_most_max_sequences_and_queues_the_rest() -> None:
    scheduler = _scheduler(_limits())
    seqs = [_seq(f"r{i}", arrival=i) for i in range(3)]
    for s in seqs:
        scheduler.add(s)
    assert set(_names(_run(scheduler))) == {"r0", "r1"}
    assert scheduler.running_count == 2 and scheduler.waiting_count == 1
    assert seqs[2].status is SequenceStatus.WAITING


def test_long_prompts_are_prefilled_in_chunks_within_the_budget() -> None:
    scheduler = _scheduler(_limits(token_budget=20, prefill_chunk=16))
    long = _seq("long", n_prompt=50)
    scheduler.add(long)
    sizes = []
    while not long.prefill_done:
        (chunk,) = _run(scheduler)
        sizes.append(chunk.n_tokens)
    assert sizes == [16, 16, 16, 2]


def test_running_streams_decode_before_new_prompts_prefill() -> None:
    scheduler = _scheduler(_limits(token_budget=8, prefill_chunk=8))
    running = _seq("running", n_prompt=4)
    scheduler.add(running)
    _run(scheduler)
    scheduler.add(_seq("newcomer", n_prompt=100))
    plan = scheduler.plan_step().chunks
    assert (plan[0].sequence.request_id, plan[0].n_tokens) == ("running", 1)
    assert (plan[1].sequence.request_id, plan[1].n_tokens) == ("newcomer", 8)


def test_prompts_that_arrive_together_are_prefilled_one_after_the_other() -> None:
    scheduler = _scheduler(_limits(max_sequences=3), prefill_sequences=1)
    for i in range(3):
        scheduler.add(_seq(f"r{i}", n_prompt=10, arrival=i))
    steps = [[(c.sequence.request_id, c.n_tokens) for c in _run(scheduler)] for _ in range(3)]
    assert steps == [
        [("r0", 10)],
        [("r0", 1), ("r1", 10)],
        [("r0", 1), ("r1", 1), ("r2", 10)],
    ]


def test_without_a_prefill_limit_the_budget_alone_bounds_a_step() -> None:
    scheduler = _scheduler(_limits(max_sequences=3), prefill_sequences=0)
    for i in range(3):
        scheduler.add(_seq(f"r{i}", n_prompt=10, arrival=i))
    assert [(c.sequence.request_id, c.n_tokens) for c in _run(scheduler)] == [
        ("r0", 10),
        ("r1", 10),
        ("r2", 10),
    ]


def test_higher_priority_submitted_last_is_admitted_first() -> None:
    scheduler = _scheduler(_limits(max_sequences=1))
    scheduler.add(_seq("low-1", arrival=0))
    scheduler.add(_seq("low-2", arrival=1))
    scheduler.add(_seq("high", priority=5, arrival=2))
    assert _names(_run(scheduler)) == ["high"]


def test_equal_priority_is_first_come_first_served() -> None:
    scheduler = _scheduler(_limits(max_sequences=1))
    scheduler.add(_seq("second", arrival=2))
    scheduler.add(_seq("first", arrival=1))
    assert _names(_run(scheduler)) == ["first"]


def test_aging_lets_a_low_priority_request_overtake_fresh_high_priority_ones() -> None:
    clock = Clock()
    scheduler = _scheduler(
        _limits(max_sequences=1, max_queue=10), aging_per_second=1.0, clock=clock
    )
    low = _seq("low", priority=0, arrival=0.0)
    scheduler.add(low)
    admitted = []
    for t in range(1, 20):
        clock.now = float(t)
        scheduler.add(_seq(f"high-{t}", priority=5, arrival=clock.now))
        for chunk in _run(scheduler):
            admitted.append(chunk.sequence.request_id)
        for sequence in list(scheduler._running):
            scheduler.finish(sequence)
        if "low" in admitted:
            break
    assert "low" in admitted, "the low-priority request starved"
    assert admitted.index("low") <= 7


def test_without_aging_low_priority_waits_while_high_keeps_coming() -> None:
    clock = Clock()
    scheduler = _scheduler(
        _limits(max_sequences=1, max_queue=30), aging_per_second=0.0, clock=clock
    )
    scheduler.add(_seq("low", priority=0, arrival=0.0))
    for t in range(1, 10):
        clock.now = float(t)
        scheduler.add(_seq(f"high-{t}", priority=5, arrival=clock.now))
        assert "low" not in _names(_run(scheduler))
        for sequence in list(scheduler._running):
            scheduler.finish(sequence)


def test_preemption_displaces_the_lowest_priority_running_sequence() -> None:
    scheduler = _scheduler(_limits(max_sequences=2, preemption=True), preemption=True)
    low, mid = _seq("low", priority=0), _seq("mid", priority=1)
    scheduler.add(low)
    scheduler.add(mid)
    _run(scheduler)
    scheduler.add(_seq("urgent", priority=9))
    plan = scheduler.plan_step()
    assert list(plan.preempt) == [low]
    assert low.status is SequenceStatus.WAITING and low.preemptions == 1
    assert set(_names(list(plan.chunks))) == {"mid", "urgent"}


def test_without_preemption_a_full_batch_is_never_interrupted() -> None:
    scheduler = _scheduler(_limits(max_sequences=1, preemption=False), preemption=False)
    scheduler.add(_seq("low"))
    _run(scheduler)
    scheduler.add(_seq("urgent", priority=9))
    plan = scheduler.plan_step()
    assert list(plan.preempt) == []
    assert _names(list(plan.chunks)) == ["low"]


def test_timeslice_rotates_equal_priority_sequences() -> None:
    clock = Clock()
    scheduler = _scheduler(
        _limits(max_sequences=1, preemption=True), preemption=True, timeslice_tokens=3, clock=clock
    )
    first, second = _seq("first", arrival=0), _seq("second", arrival=1)
    scheduler.add(first)
    scheduler.add(second)
    order = []
    for t in range(12):
        clock.now = 2.0 + t
        order.extend(_names(_run(scheduler)))
    assert order[:4] == ["first"] * 4
    assert "second" in order and order.count("first") < 10
    assert first.preemptions >= 1


def test_queue_bound_raises_429_with_retry_after() -> None:
    scheduler = _scheduler(_limits(max_queue=2))
    scheduler.add(_seq("a"))
    scheduler.add(_seq("b"))
    with pytest.raises(QueueFullError) as caught:
        scheduler.add(_seq("c"))
    assert caught.value.status == 429
    assert caught.value.headers["Retry-After"] == "1"


def test_finish_removes_waiting_and_running_sequences() -> None:
    scheduler = _scheduler(_limits(max_sequences=1))
    first, second = _seq("first"), _seq("second", arrival=1)
    scheduler.add(first)
    scheduler.add(second)
    scheduler.plan_step()
    scheduler.finish(second)
    scheduler.finish(first)
    assert scheduler.running_count == 0 and scheduler.waiting_count == 0
    assert not scheduler.plan_step()


def test_admission_waits_for_free_kv_cells() -> None:
    scheduler = _scheduler(_limits(kv_capacity=100, max_sequences=4))
    scheduler.add(_seq("big", n_prompt=80))
    scheduler.add(_seq("next", n_prompt=30, arrival=1))
    assert _names(_run(scheduler)) == ["big"]


def test_chunk_boundaries_do_not_depend_on_other_sequences() -> None:
    def boundaries(companions: int) -> list[int]:
        scheduler = _scheduler(
            _limits(max_sequences=8, token_budget=40, prefill_chunk=16, max_queue=10)
        )
        target = _seq("target", n_prompt=50)
        scheduler.add(target)
        for i in range(companions):
            scheduler.add(_seq(f"c{i}", n_prompt=30, arrival=1 + i))
        sizes = []
        while not target.prefill_done:
            sizes += [c.n_tokens for c in _run(scheduler) if c.sequence is target]
        return sizes

    assert boundaries(0) == boundaries(5) == [16, 16, 16, 2]


def test_a_budget_smaller_than_a_chunk_is_raised_so_prefill_never_starves() -> None:
    scheduler = _scheduler(_limits(token_budget=4, prefill_chunk=16))
    assert scheduler.limits.token_budget == 16 + 2
    scheduler.add(_seq("long", n_prompt=40))
    (chunk,) = _run(scheduler)
    assert chunk.n_tokens == 16


def test_unknown_options_are_refused_naming_their_key() -> None:
    with pytest.raises(ConfigError, match=r"scheduler\.options\.fairness: Extra inputs"):
        _scheduler(_limits(), fairness=3)


def test_an_invalid_option_names_its_full_key() -> None:
    with pytest.raises(ConfigError) as refused:
        _scheduler(_limits(), timeslice_tokens=-1)
    assert refused.value.param == "scheduler.options.timeslice_tokens"
    assert "scheduler.options.timeslice_tokens: Input should be greater" in refused.value.message


def test_the_preemption_option_needs_an_engine_that_can_preempt() -> None:
    scheduler = _scheduler(_limits(max_sequences=1, preemption=False), preemption=True)
    scheduler.add(_seq("low"))
    _run(scheduler)
    scheduler.add(_seq("urgent", priority=9, arrival=1))
    assert not scheduler.plan_step().preempt
