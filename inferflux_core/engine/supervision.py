"""Supervision of a model's step loop: whom a failed step fails, and when the model is broken.

Nothing a scheduler or backend raises may stop the step thread, or every later request would
hang. The rules:

- **A failed plan** (``Scheduler.plan_step`` raised) fails the requests it most likely concerns
  with a 503 ``scheduler_error``: first those queued since the last plan that succeeded (a
  scheduler usually breaks on admitting a new request); if the next plan fails too, every
  waiting request; after that, every live one.
- **A failed step** (the backend raised while opening, decoding or sampling) fails the
  requests of that step with a 503 ``backend_error``: their KV state is unknown. An error the
  backend raises with a 4xx status is the request's fault: it reaches the client unchanged and
  counts as no failure. A backend whose step ran but some sequences of it cannot go on raises
  :class:`~inferflux_core.errors.SequencesFailedError`: only those fail (400), the others'
  tokens are accepted (:mod:`inferflux_core.engine.plan`), nothing counts as a failure.
- **A failed submit** (``Scheduler.add`` raised something else than an inferflux error) is a
  503 ``scheduler_error`` for that request, and nothing of it stays queued.
- **A broken model**: after :data:`MAX_FAILED_STEPS` failed plans in a row, or as many failed
  steps in a row while requests keep coming (a successful step, or an idle loop, starts the
  count again), or at once for a :class:`~inferflux_core.errors.FatalBackendError`, the model is
  marked failed: its live requests fail, new ones get a 503 ``model_failed`` at once, and
  ``/readyz`` answers 503 naming the model and the reason. A failed model stays failed until
  the server restarts. So does a step thread that died of anything else (``BaseException``).
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Iterable
from typing import TYPE_CHECKING

from inferflux_core.contracts import ScheduledSequence, SequenceStatus, StepPlan
from inferflux_core.errors import (
    BackendError,
    FatalBackendError,
    InferfluxError,
    ModelFailedError,
    ServiceUnavailableError,
)

if TYPE_CHECKING:
    from inferflux_core.engine.runner import ModelRunner
    from inferflux_core.engine.stream import EngineSequence

log = logging.getLogger(__name__)

#: Failed plans, or failed steps, in a row after which a model is marked failed.
MAX_FAILED_STEPS = 5
#: How long the step thread waits after a failure before it tries again (no busy loop).
FAILURE_BACKOFF_SECONDS = 0.01
_RETRY = {"Retry-After": "1"}


class ModelHealth:
    """Whether a model's step loop still serves; once failed it stays failed."""

    def __init__(self, model_name: str) -> None:
        self.model_name = model_name
        #: Why the model stopped serving; None while it serves.
        self.failure: str | None = None

    @property
    def failed(self) -> bool:
        """True once the model stopped serving."""
        return self.failure is not None

    def mark_failed(self, reason: str) -> bool:
        """Record why the model stopped serving; True the first time (later reasons are
        dropped: the first one is the cause)."""
        if self.failure is not None:
            return False
        self.failure = reason
        log.critical("model %s is out of service: %s", self.model_name, reason)
        return True

    def error(self) -> ModelFailedError:
        """The error a request for the failed model gets."""
        return ModelFailedError(
            f"the model {self.model_name!r} is out of service ({self.failure}); "
            f"it serves no requests until the server restarts",
            headers=dict(_RETRY),
        )

    def check(self) -> None:
        """Raise :meth:`error` if the model stopped serving."""
        if self.failure is not None:
            raise self.error()


class StepSupervisor:
    """Turns what a scheduler or backend raised into the errors its requests get, and counts
    failures in a row to tell a broken model from one bad request."""

    def __init__(self, health: ModelHealth, *, max_failed_steps: int = MAX_FAILED_STEPS) -> None:
        self.health = health
        self.max_failed_steps = max_failed_steps
        self._failed_plans = 0
        self._failed_steps = 0
        #: When the last successful plan began: requests submitted since are its suspects.
        self._good_plan_started = 0.0

    # --- the scheduler ----------------------------------------------------------------------

    def plan_succeeded(self, started: float) -> None:
        """``plan_step`` (called at ``started``) returned a plan."""
        self._failed_plans = 0
        self._good_plan_started = started

    def plan_failed(self, exc: Exception) -> InferfluxError:
        """Log and count a failed ``plan_step``; the error for the requests it concerns."""
        self._failed_plans += 1
        detail = _describe(exc)
        log.error("model %s: the scheduler failed to plan a step: %s", self._name, _located(exc))
        log.debug("scheduler failure", exc_info=exc)
        if self._failed_plans >= self.max_failed_steps:
            self.health.mark_failed(
                f"the scheduler failed {self._failed_plans} plans in a row; the last: {detail}"
            )
        return _scheduler_error(exc)

    def suspects(self, live: Iterable[EngineSequence]) -> list[EngineSequence]:
        """Whom the latest failed plan fails: see the module docstring. A level that finds
        nobody gives way to the next."""
        live = list(live)
        arrived = [s for s in live if s.state.submitted_at >= self._good_plan_started]
        waiting = [s for s in live if s.status is SequenceStatus.WAITING]
        levels = (arrived, waiting, live)[min(self._failed_plans, 3) - 1 :]
        return next((level for level in levels if level), [])

    def submit_error(self, exc: BaseException) -> BaseException:
        """What a client gets when ``Scheduler.add`` raised ``exc`` for its request."""
        if isinstance(exc, InferfluxError) or not isinstance(exc, Exception):
            return exc
        log.error(
            "model %s: the scheduler failed to queue a request: %s", self._name, _located(exc)
        )
        log.debug("scheduler failure", exc_info=exc)
        return _scheduler_error(exc)

    # --- the backend ------------------------------------------------------------------------

    def step_succeeded(self) -> None:
        """A step ran, or the loop found nothing to do: failures are no longer in a row."""
        self._failed_steps = 0

    def step_failed(self, exc: Exception) -> InferfluxError:
        """Log and count a failed step; the error for the requests of that step."""
        if isinstance(exc, InferfluxError) and exc.status < 500:
            return exc
        self._failed_steps += 1
        detail = _describe(exc)
        log.error("model %s: a step failed: %s", self._name, _located(exc))
        log.debug("step failure", exc_info=exc)
        if isinstance(exc, FatalBackendError):
            self.health.mark_failed(f"the backend cannot go on: {detail}")
        elif self._failed_steps >= self.max_failed_steps:
            self.health.mark_failed(
                f"{self._failed_steps} steps failed in a row; the last: {detail}"
            )
        if isinstance(exc, ServiceUnavailableError | BackendError):
            return exc
        return BackendError(f"the backend failed a step ({detail}); retry the request")

    def thread_died(self, exc: BaseException) -> None:
        """The step thread is ending on ``exc``: the model is failed."""
        log.error("model %s: the step thread died", self._name, exc_info=exc)
        self.health.mark_failed(f"the step thread died: {_describe(exc)}")

    @property
    def _name(self) -> str:
        return self.health.model_name


def overdue(sequences: Iterable[EngineSequence], cutoff: float) -> list[EngineSequence]:
    """Sequences still waiting for their first admission that were submitted before ``cutoff``
    (on the ``time.monotonic`` clock)."""
    return [
        s
        for s in sequences
        if s.seq_id is None
        and s.saved is None
        and s.status is SequenceStatus.WAITING
        and s.state.submitted_at < cutoff
    ]


def queue_timeout_error(timeout: float) -> ServiceUnavailableError:
    """What a request that waited ``timeout`` seconds for a slot gets."""
    return ServiceUnavailableError(
        f"the request waited {timeout:g} s for a free slot; retry later",
        code="queue_timeout",
        headers=dict(_RETRY),
    )


class StepLoop:
    """The body of a model's step thread: housekeeping, one plan, one step, until the runner
    stops or the model fails; every failure is handled by the rules above."""

    def __init__(self, runner: ModelRunner, health: ModelHealth) -> None:
        self._runner = runner
        self._health = health
        self.supervisor = StepSupervisor(health)

    def run(self) -> None:
        """Step until stopped; a model that failed, or a loop that died, fails what is live."""
        runner = self._runner
        try:
            while not runner.stopping and not self._health.failed:
                self.run_once()
        except BaseException as exc:  # whatever ends the loop must not leave requests hanging
            self.supervisor.thread_died(exc)
        finally:
            if not runner.stopping:
                self._health.mark_failed("the step thread stopped")
                runner.fail_everything(self._health.error())

    def run_once(self) -> None:
        """One turn of the loop."""
        runner = self._runner
        try:
            runner.housekeep()
        except Exception as exc:  # the requests it concerned are released already
            self.supervisor.step_failed(exc)
        started = time.monotonic()
        try:
            plan = runner.scheduler.plan_step()
        except Exception as exc:
            error = self.supervisor.plan_failed(exc)
            runner.fail(self.supervisor.suspects(runner.live_sequences()), error)
            runner.idle(FAILURE_BACKOFF_SECONDS)
            return
        self.supervisor.plan_succeeded(started)
        if not plan:
            self.supervisor.step_succeeded()
            runner.idle()
            return
        try:
            runner.run_step(plan)
            self.supervisor.step_succeeded()
        except Exception as exc:
            runner.fail(plan_sequences(plan), self.supervisor.step_failed(exc))
        runner.flush()


def plan_sequences(plan: StepPlan) -> list[ScheduledSequence]:
    """Every sequence a plan touches (preempted ones and those with a chunk)."""
    return [*plan.preempt, *(chunk.sequence for chunk in plan.chunks)]


def scheduler_error(message: str) -> ServiceUnavailableError:
    """A 503 ``scheduler_error``: the scheduler failed the request."""
    return ServiceUnavailableError(message, code="scheduler_error", headers=dict(_RETRY))


def _scheduler_error(exc: BaseException) -> InferfluxError:
    if isinstance(exc, ServiceUnavailableError):
        return exc
    return scheduler_error(
        f"the scheduler failed ({_describe(exc)}); the request could not run; retry it"
    )


def _describe(exc: BaseException) -> str:
    """The exception's type and message on one line, for the client and the log."""
    message = exc.message if isinstance(exc, InferfluxError) else str(exc)
    return f"{type(exc).__name__}: {message[:200]}" if message else type(exc).__name__


def _located(exc: BaseException) -> str:
    """:func:`_describe` and where it was raised: what a client may trigger is logged on one
    line, without a traceback (the full one is logged at debug level)."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return _describe(exc)
    return f"{_describe(exc)} (at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno})"
