"""The step loop of one loaded model: a thread that drives the scheduler and the backend.

:class:`ModelRunner` is the facade; each concern has its module: admission and the queue
(:mod:`~inferflux_core.engine.admission`), a sequence's KV life
(:mod:`~inferflux_core.engine.lifecycle`), how a plan is applied
(:mod:`~inferflux_core.engine.plan`, on the backend :mod:`~inferflux_core.engine.step`),
finish rules (:mod:`~inferflux_core.engine.finish`), the hand-off of events to the event
loop (:class:`~inferflux_core.engine.stream.Outbox`), metrics
(:mod:`~inferflux_core.engine.runner_metrics`) and supervision
(:mod:`~inferflux_core.engine.supervision`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from inferflux_core.contracts import (
    ScheduledSequence,
    Scheduler,
    StepBackend,
    StepPlan,
)
from inferflux_core.engine import supervision
from inferflux_core.engine.admission import Admission
from inferflux_core.engine.draft_model import DraftModel
from inferflux_core.engine.embedding import EmbeddingQueue
from inferflux_core.engine.finish import TokenAcceptor
from inferflux_core.engine.lifecycle import SequenceLifecycle
from inferflux_core.engine.requests import GenerationRequest
from inferflux_core.engine.runner_metrics import RunnerMetrics
from inferflux_core.engine.slots import KVSlots
from inferflux_core.engine.speculation import Speculation, SpeculationSettings
from inferflux_core.engine.step import StepApplier
from inferflux_core.engine.step_tasks import StepTasks
from inferflux_core.engine.stream import EngineSequence, Outbox, RequestStream
from inferflux_core.errors import ServiceUnavailableError
from inferflux_core.metrics import EngineMetrics

log = logging.getLogger(__name__)

IDLE_WAIT_SECONDS = 0.5


#: How long :meth:`ModelRunner.stop` waits for the step in progress to end.
STOP_TIMEOUT_SECONDS = 30.0


def _reuses_generated(model_name: str, backend: StepBackend, setting: str | bool) -> bool:
    """Whether generated tokens' KV is reused: ``inexact`` always, ``exact`` where the backend
    computes decode steps as short prompt chunks (asked of it now)."""
    if setting == "inexact":
        return True
    if setting != "exact":
        return False
    if backend.kv_rows_by_chunk_class and backend.exact_decode_rows():
        return True
    log.warning(
        "model %s: reuse_generated: exact needs a backend whose decode steps compute tokens as "
        "short prompt chunks do; generated tokens are not reused",
        model_name,
    )
    return False


class ModelRunner:
    """Runs continuous batching for one model on a dedicated thread.

    Requests are submitted from the event loop; each step asks the scheduler for chunks, feeds
    them to the backend in one ``decode`` call, turns sampled tokens into events and delivers
    every event of the step to the event loop in one hop.
    """

    def __init__(
        self,
        model_name: str,
        backend: StepBackend,
        scheduler: Scheduler,
        metrics: EngineMetrics,
        *,
        max_sequences: int,
        context_length: int,
        eog_tokens: Sequence[int] = (),
        prefix_reuse: bool = True,
        reuse_generated: str | bool = False,
        queue_timeout: float = 0.0,
        max_queue: int = 256,
        speculation: SpeculationSettings | None = None,
        draft_model: DraftModel | None = None,
    ) -> None:
        self.model_name = model_name
        self.backend = backend
        self.scheduler = scheduler
        self.context_length = context_length
        self.slots = KVSlots(
            max_sequences,
            reuse=prefix_reuse and backend.supports_prefix_reuse,
            align=scheduler.limits.prefill_chunk,
            independent_below=backend.independent_rows_below,
            row_classes=backend.kv_rows_by_chunk_class,
            reuse_generated=_reuses_generated(model_name, backend, reuse_generated),
        )
        #: Whether the model still serves; see :mod:`inferflux_core.engine.supervision`.
        self.health = supervision.ModelHealth(model_name)
        self._loop = supervision.StepLoop(self, self.health)
        self._live: dict[str, EngineSequence] = {}
        self._wake = threading.Event()
        self._outbox = Outbox()
        self._m = RunnerMetrics(metrics, model_name)
        self._kv_capacity = context_length * max_sequences
        metrics.on_scrape(model_name, self._scrape_metrics)
        self._admission = Admission(
            backend,
            scheduler,
            self._m,
            self._live,
            self._loop,
            self._wake,
            context_length=context_length,
            queue_timeout=queue_timeout,
        )
        drafting = (
            Speculation(speculation, backend, draft_model) if speculation is not None else None
        )
        self._lifecycle = SequenceLifecycle(
            backend,
            scheduler,
            self.slots,
            self._m,
            self._live,
            eog_tokens=eog_tokens,
            speculation=drafting,
        )
        self._tokens = TokenAcceptor(
            backend,
            self._outbox,
            self._m,
            self._lifecycle.release,
            context_length=context_length,
        )
        self._steps = StepApplier(
            backend,
            scheduler,
            self._lifecycle,
            self._tokens,
            self._m,
            self._live,
            self.fail,
            drafting,
        )
        #: Embedding requests, run on the step thread between generation steps.
        self.embeddings = EmbeddingQueue(
            model_name, backend, metrics, self._wake, max_queue=max_queue
        )
        #: Calls that must run on the step thread (loading an adapter at runtime).
        self.tasks = StepTasks(self._wake)
        self._thread = threading.Thread(
            target=self._loop.run, name=f"inferflux-step-{model_name}", daemon=True
        )

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._admission.stopping

    @property
    def queue_timeout(self) -> float:
        """Seconds a request may wait for admission (0: no limit)."""
        return self._admission.queue_timeout

    @property
    def active_sequences(self) -> int:
        """Sequences that currently hold a KV ``seq_id``."""
        return sum(1 for s in list(self._live.values()) if s.seq_id is not None)

    @property
    def live_requests(self) -> int:
        """Requests submitted and not yet finished (waiting or running)."""
        return len(self._live)

    def _scrape_metrics(self) -> None:
        """KV usage as of now (cells held by running sequences; a cached idle prefix is
        free, as vLLM counts it), and the failed state (on the scrape's thread)."""
        held = sum(
            s.n_prefilled + len(s.generated)
            for s in list(self._live.values())
            if s.seq_id is not None
        )
        self._m.scrape(held, self._kv_capacity, failed=self.health.failed)

    def start(self) -> None:
        """Start the step thread."""
        self._thread.start()

    def stop(self) -> bool:
        """Stop the step thread and fail every request still in flight; False if the thread
        is still in a step after :data:`STOP_TIMEOUT_SECONDS` (the backend is then in use)."""
        self._admission.stopping = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=STOP_TIMEOUT_SECONDS)
        self.fail_everything(ServiceUnavailableError("the server is shutting down"))
        return not self._thread.is_alive()

    def submit(self, request: GenerationRequest) -> RequestStream:
        """Queue a request; raises ContextLengthError / QueueFullError / ServiceUnavailable."""
        self._admission.check(request)
        return self._admission.queue(request, None)

    def submit_group(self, requests: Sequence[GenerationRequest]) -> list[RequestStream]:
        """Queue requests with one prompt (``n > 1``): the first prefills it, the rest copy it.

        With a backend that supports prefix reuse, the others wait while the first prefills
        the prompt and then copy its KV (all but the last prompt token, which each decodes to
        get its own first token), so the prompt is prefilled once. All are queued, or none.
        """
        for request in requests:
            self._admission.check(request)
        if len({tuple(r.prompt_tokens) for r in requests}) > 1:
            raise ValueError("submit_group needs requests with the same prompt")
        streams: list[RequestStream] = []
        leader: EngineSequence | None = None
        try:
            for request in requests:
                streams.append(self._admission.queue(request, leader))
                leader = leader or self._live[request.request_id]
        except BaseException:
            for stream in streams:
                stream.cancel()
            raise
        return streams

    # --- the step thread -------------------------------------------------------------------

    def housekeep(self) -> None:
        """Free cancelled requests, expire those that waited too long, run an embedding batch
        and the calls queued for this thread."""
        self._wake.clear()
        self._admission.reap_cancelled(self._finish)
        self._admission.expire_waiting(self._finish)
        self.embeddings.run_batch()
        self.tasks.run_pending()

    def idle(self, seconds: float = IDLE_WAIT_SECONDS) -> None:
        """Nothing to step: wait up to ``seconds`` for a request, unless embeddings wait."""
        self._m.queue_sizes(self.scheduler.running_count, self.scheduler.waiting_count)
        if not self.embeddings.pending and not self.tasks.pending:
            self._wake.wait(seconds)

    def live_sequences(self) -> list[EngineSequence]:
        """The sequences of every request submitted and not yet finished."""
        return list(self._live.values())

    def fail(self, sequences: Sequence[ScheduledSequence], error: Exception) -> None:
        """End ``sequences`` with ``error`` now; a release that fails does not stop the others."""
        for sequence in sequences:
            live = self._live.get(sequence.request_id)
            if live is None or live is not sequence:
                continue
            try:
                self._finish(live, "error", error, keep_kv=False)
            except Exception:
                log.warning("model %s: could not free a failed sequence", self.model_name)
        self.flush()

    def fail_everything(self, error: ServiceUnavailableError) -> None:
        """Fail every live request and queued embedding (the model stops, or failed)."""
        self.fail(self.live_sequences(), error)
        self.embeddings.fail_all(error)
        self.tasks.fail_all(error)

    def run_step(self, plan: StepPlan) -> None:
        """Open, feed and sample the plan's sequences in one ``decode``; emit their events."""
        if self._steps.apply(plan):
            self._m.queue_sizes(self.scheduler.running_count, self.scheduler.waiting_count)

    def _finish(
        self,
        sequence: EngineSequence,
        reason: str,
        error: Exception | None,
        *,
        keep_kv: bool = True,
    ) -> None:
        """End a sequence early (error, cancel): tell its consumer, then release it."""
        if sequence.request_id not in self._live:
            return
        self._tokens.emit(sequence, "", (), reason, error)
        self._lifecycle.release(sequence, reason, keep_kv=keep_kv)

    def flush(self) -> None:
        """Hand the events of this step to the event loops of their requests."""
        self._outbox.flush()
