"""The supervision rules: whom a failed plan fails, and when a model counts as broken."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from inferflux_core.contracts import SequenceStatus
from inferflux_core.engine.stream import EngineSequence
from inferflux_core.engine.supervision import MAX_FAILED_STEPS, ModelHealth, StepSupervisor
from inferflux_core.errors import (
    BackendError,
    FatalBackendError,
    InvalidRequestError,
    ModelFailedError,
    QueueFullError,
)


def _sequence(name: str, submitted_at: float, status: SequenceStatus) -> EngineSequence:
    state: Any = SimpleNamespace(submitted_at=submitted_at)
    sequence = EngineSequence(request_id=name, prompt_tokens=[1, 2], state=state)
    sequence.status = status
    return sequence


def _supervisor() -> StepSupervisor:
    return StepSupervisor(ModelHealth("m"))


def test_a_failed_plan_blames_new_arrivals_then_the_waiting_then_everyone() -> None:
    supervisor = _supervisor()
    supervisor.plan_succeeded(started=10.0)
    running = _sequence("running", 1.0, SequenceStatus.RUNNING)
    old_waiting = _sequence("old-waiting", 2.0, SequenceStatus.WAITING)
    new = _sequence("new", 11.0, SequenceStatus.WAITING)
    live = [running, old_waiting, new]
    levels = []
    for _ in range(4):
        error = supervisor.plan_failed(OverflowError("cannot rank"))
        levels.append([s.request_id for s in supervisor.suspects(live)])
    everyone = [s.request_id for s in live]
    assert levels == [["new"], ["old-waiting", "new"], everyone, everyone]
    assert (error.status, error.code) == (503, "scheduler_error")
    assert "OverflowError: cannot rank" in error.message


def test_a_level_with_nobody_gives_way_to_the_next() -> None:
    supervisor = _supervisor()
    supervisor.plan_succeeded(started=10.0)
    running = _sequence("running", 1.0, SequenceStatus.RUNNING)
    supervisor.plan_failed(RuntimeError())
    assert supervisor.suspects([running]) == [running]
    assert supervisor.suspects([]) == []


def test_plans_failing_in_a_row_mark_the_model_failed_and_a_good_plan_resets_the_count() -> None:
    supervisor = _supervisor()
    for _ in range(MAX_FAILED_STEPS - 1):
        supervisor.plan_failed(RuntimeError("x"))
    supervisor.plan_succeeded(started=1.0)
    for _ in range(MAX_FAILED_STEPS - 1):
        supervisor.plan_failed(RuntimeError("x"))
    assert not supervisor.health.failed
    supervisor.plan_failed(RuntimeError("x"))
    assert supervisor.health.failure is not None
    assert f"{MAX_FAILED_STEPS} plans in a row" in supervisor.health.failure


def test_steps_failing_in_a_row_mark_the_model_failed_and_a_good_step_resets_the_count() -> None:
    supervisor = _supervisor()
    for _ in range(MAX_FAILED_STEPS - 1):
        error = supervisor.step_failed(RuntimeError("decode broke"))
    assert (error.status, error.code) == (503, "backend_error")
    assert "RuntimeError: decode broke" in error.message
    supervisor.step_succeeded()
    for _ in range(MAX_FAILED_STEPS - 1):
        supervisor.step_failed(BackendError("llama_decode returned -3"))
    assert not supervisor.health.failed
    supervisor.step_failed(BackendError("llama_decode returned -3"))
    assert supervisor.health.failed
    with pytest.raises(ModelFailedError, match="llama_decode returned -3") as caught:
        supervisor.health.check()
    assert (caught.value.status, caught.value.code) == (503, "model_failed")


def test_a_fatal_backend_error_marks_the_model_failed_at_once_and_keeps_the_first_reason() -> None:
    supervisor = _supervisor()
    error = supervisor.step_failed(FatalBackendError("device lost"))
    assert isinstance(error, FatalBackendError) and error.status == 503
    assert supervisor.health.failure == "the backend cannot go on: FatalBackendError: device lost"
    supervisor.thread_died(SystemExit())
    assert supervisor.health.failure == "the backend cannot go on: FatalBackendError: device lost"


def test_a_request_error_from_the_backend_reaches_the_client_and_counts_as_no_failure() -> None:
    supervisor = _supervisor()
    refused = InvalidRequestError("the grammar is empty", param="response_format")
    for _ in range(MAX_FAILED_STEPS * 2):
        assert supervisor.step_failed(refused) is refused
    assert not supervisor.health.failed


def test_add_errors_of_our_own_pass_and_anything_else_is_a_scheduler_error() -> None:
    supervisor = _supervisor()
    full = QueueFullError("the request queue is full")
    assert supervisor.submit_error(full) is full
    error = supervisor.submit_error(KeyError("oops"))
    assert (error.status, error.code) == (503, "scheduler_error")  # type: ignore[attr-defined]
    cancelled = KeyboardInterrupt()
    assert supervisor.submit_error(cancelled) is cancelled
