"""Admission: what may be queued, queueing it with the scheduler, and what leaves the queue
without running (cancelled, or waited past ``queue_timeout``)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from collections.abc import Callable

from inferflux_core.contracts import Scheduler, StepBackend
from inferflux_core.engine import supervision
from inferflux_core.engine.requests import GenerationRequest
from inferflux_core.engine.runner_metrics import RunnerMetrics
from inferflux_core.engine.stream import EngineSequence, RequestState, RequestStream
from inferflux_core.engine.text import TextAssembler
from inferflux_core.errors import (
    ContextLengthError,
    InferfluxError,
    InvalidRequestError,
    ServiceUnavailableError,
)

DEADLINE_CHECK_SECONDS = 0.25

#: Ends a sequence early with a reason and an error (the runner's finish).
Finish = Callable[[EngineSequence, str, Exception | None], None]


class Admission:
    """Queues requests from the event loop; reaps cancelled and overdue ones on the step
    thread. ``live`` holds every request submitted and not yet finished, by request id."""

    def __init__(
        self,
        backend: StepBackend,
        scheduler: Scheduler,
        metrics: RunnerMetrics,
        live: dict[str, EngineSequence],
        loop: supervision.StepLoop,
        wake: threading.Event,
        *,
        context_length: int,
        queue_timeout: float,
    ) -> None:
        self.backend = backend
        self.scheduler = scheduler
        self.live = live
        self.context_length = context_length
        self.queue_timeout = queue_timeout
        #: Set once the runner stops: nothing more is queued.
        self.stopping = False
        self._m = metrics
        self._loop = loop
        self._wake = wake
        self._cancelled: collections.deque[RequestState] = collections.deque()
        self._next_deadline_check = 0.0

    def check(self, request: GenerationRequest) -> None:
        """Raise unless ``request`` may be queued now."""
        if self.stopping:
            raise ServiceUnavailableError("the server is shutting down")
        self._loop.supervisor.health.check()
        n_prompt = len(request.prompt_tokens)
        if n_prompt >= self.context_length:
            raise ContextLengthError(
                f"the prompt has {n_prompt} tokens but the model's context length is "
                f"{self.context_length}; shorten the prompt",
                param="messages",
            )
        if n_prompt == 0:
            raise InvalidRequestError("the prompt is empty", param="prompt")

    def queue(self, request: GenerationRequest, leader: EngineSequence | None) -> RequestStream:
        """Hand ``request`` to the scheduler (a follower of ``leader`` if given); on failure
        nothing of it is kept."""
        state = RequestState(
            request=request,
            loop=asyncio.get_running_loop(),
            assembler=TextAssembler(self.backend.token_bytes, request.stop),
            submitted_at=time.monotonic(),
        )
        if leader is not None and self.backend.supports_prefix_reuse:
            state.leader = leader
        sequence = EngineSequence(
            request_id=request.request_id,
            prompt_tokens=list(request.prompt_tokens),
            priority=request.priority,
            adapter=request.adapter,
            state=state,
        )
        state.sequence = sequence
        # Tracked before the scheduler has it, so the step thread never plans an unknown one.
        self.live[request.request_id] = sequence
        if state.leader is not None:
            state.leader.state.followers.append(sequence)
        added = False
        try:
            self.scheduler.add(sequence)
            added = True
            self._loop.supervisor.health.check()  # the step loop may have given up meanwhile
        except BaseException as exc:
            self.live.pop(request.request_id, None)
            if state.leader is not None:
                state.leader.state.followers.remove(sequence)
            if added or not isinstance(exc, InferfluxError):  # a bug may have queued it
                with contextlib.suppress(Exception):
                    self.scheduler.finish(sequence)
            raise self._loop.supervisor.submit_error(exc) from None
        self._m.waiting.set(self.scheduler.waiting_count)
        self._wake.set()
        return RequestStream(state, self._request_cancel)

    def _request_cancel(self, state: RequestState) -> None:
        self._cancelled.append(state)
        self._wake.set()

    def reap_cancelled(self, finish: Finish) -> None:
        """Finish every request cancelled since the last call (step thread)."""
        while self._cancelled:
            state = self._cancelled.popleft()
            if state.sequence is not None:
                finish(state.sequence, "cancelled", None)

    def expire_waiting(self, finish: Finish) -> None:
        """Fail requests that waited for admission longer than ``queue_timeout``."""
        now = time.monotonic()
        if self.queue_timeout <= 0 or now < self._next_deadline_check:
            return
        self._next_deadline_check = now + DEADLINE_CHECK_SECONDS
        for sequence in supervision.overdue(list(self.live.values()), now - self.queue_timeout):
            finish(sequence, "error", supervision.queue_timeout_error(self.queue_timeout))
