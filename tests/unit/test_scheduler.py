"""The continuous-batching scheduler's admission, budget and queue bound."""

from __future__ import annotations

import pytest

from inferflux_core.contracts import ScheduledSequence, SchedulerLimits, SequenceStatus
from inferflux_core.errors import QueueFullError
from inferflux_plugins.schedulers.continuous import ContinuousBatchingScheduler


def _limits(**kw: int) -> SchedulerLimits:
    base = dict(
        max_sequences=2,
        context_length=1000,
        kv_capacity=1000,
        token_budget=64,
        prefill_chunk=16,
        max_queue=3,
    )
    base.update(kw)
    return SchedulerLimits(**base)


def _seq(name: str, n_prompt: int = 10, priority: int = 0) -> ScheduledSequence:
    return ScheduledSequence(
        request_id=name, prompt_tokens=list(range(n_prompt)), priority=priority
    )


def test_admits_at_most_max_sequences_and_queues_the_rest() -> None:
    scheduler = ContinuousBatchingScheduler(_limits())
    seqs = [_seq(f"r{i}") for i in range(3)]
    for s in seqs:
        scheduler.add(s)
    plan = scheduler.plan_step()
    assert {c.sequence.request_id for c in plan} == {"r0", "r1"}
    assert scheduler.running_count == 2 and scheduler.waiting_count == 1
    assert seqs[2].status is SequenceStatus.WAITING


def test_long_prompts_are_prefilled_in_chunks_within_the_budget() -> None:
    scheduler = ContinuousBatchingScheduler(_limits(token_budget=20, prefill_chunk=16))
    long = _seq("long", n_prompt=50)
    scheduler.add(long)
    sizes = []
    while not long.prefill_done:
        (chunk,) = scheduler.plan_step()
        sizes.append(chunk.n_tokens)
        long.n_prefilled += chunk.n_tokens
    assert sizes == [16, 16, 16, 2]


def test_running_streams_decode_before_new_prompts_prefill() -> None:
    scheduler = ContinuousBatchingScheduler(_limits(token_budget=8, prefill_chunk=8))
    running = _seq("running", n_prompt=4)
    scheduler.add(running)
    scheduler.plan_step()
    running.n_prefilled = 4
    running.generated.append(1)
    scheduler.add(_seq("newcomer", n_prompt=100))
    plan = scheduler.plan_step()
    assert (plan[0].sequence.request_id, plan[0].n_tokens) == ("running", 1)
    assert (plan[1].sequence.request_id, plan[1].n_tokens) == ("newcomer", 8)


def test_higher_priority_is_admitted_first() -> None:
    scheduler = ContinuousBatchingScheduler(_limits(max_sequences=1))
    scheduler.add(_seq("low"))
    scheduler.add(_seq("high", priority=5))
    (chunk,) = scheduler.plan_step()
    assert chunk.sequence.request_id == "high"


def test_queue_bound_raises_429_with_retry_after() -> None:
    scheduler = ContinuousBatchingScheduler(_limits(max_queue=2))
    scheduler.add(_seq("a"))
    scheduler.add(_seq("b"))
    with pytest.raises(QueueFullError) as caught:
        scheduler.add(_seq("c"))
    assert caught.value.status == 429
    assert caught.value.headers["Retry-After"] == "1"


def test_finish_removes_waiting_and_running_sequences() -> None:
    scheduler = ContinuousBatchingScheduler(_limits(max_sequences=1))
    first, second = _seq("first"), _seq("second")
    scheduler.add(first)
    scheduler.add(second)
    scheduler.plan_step()
    scheduler.finish(second)
    scheduler.finish(first)
    assert scheduler.running_count == 0 and scheduler.waiting_count == 0
    assert scheduler.plan_step() == []


def test_admission_waits_for_free_kv_cells() -> None:
    scheduler = ContinuousBatchingScheduler(_limits(kv_capacity=100, max_sequences=4))
    scheduler.add(_seq("big", n_prompt=80))
    scheduler.add(_seq("next", n_prompt=30))
    plan = scheduler.plan_step()
    assert [c.sequence.request_id for c in plan] == ["big"]


def test_chunk_boundaries_do_not_depend_on_other_sequences() -> None:
    def boundaries(companions: int) -> list[int]:
        scheduler = ContinuousBatchingScheduler(
            _limits(max_sequences=8, token_budget=40, prefill_chunk=16, max_queue=10)
        )
        target = _seq("target", n_prompt=50)
        scheduler.add(target)
        for i in range(companions):
            scheduler.add(_seq(f"c{i}", n_prompt=30))
        sizes = []
        while not target.prefill_done:
            for chunk in scheduler.plan_step():
                if not chunk.sequence.prefill_done:
                    chunk.sequence.n_prefilled += chunk.n_tokens
                    if chunk.sequence is target:
                        sizes.append(chunk.n_tokens)
        return sizes

    assert boundaries(0) == boundaries(5) == [16, 16, 16, 2]


def test_a_budget_smaller_than_a_chunk_is_raised_so_prefill_never_starves() -> None:
    scheduler = ContinuousBatchingScheduler(_limits(token_budget=4, prefill_chunk=16))
    assert scheduler.limits.token_budget == 16 + 2
    scheduler.add(_seq("long", n_prompt=40))
    (chunk,) = scheduler.plan_step()
    assert chunk.n_tokens == 16


def test_unknown_options_are_refused() -> None:
    with pytest.raises(TypeError, match="fairness"):
        ContinuousBatchingScheduler(_limits(), fairness=3)
