"""Embedding jobs of one model, run on its step thread between generation steps.

The step thread owns the backend, so embeddings run there too: never at the same time as a
generation step (which would split the cores between two forward passes), and a long queue of
embeddings only delays each generation step by one embedding batch. Queued inputs of several
requests are packed together into one backend call within the backend's batch limits.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
from dataclasses import dataclass, field

from inferflux_core.contracts import EmbeddingInfo, StepBackend
from inferflux_core.errors import BackendError, InferfluxError, QueueFullError
from inferflux_core.metrics import EngineMetrics

log = logging.getLogger(__name__)


@dataclass(eq=False, slots=True)
class EmbeddingJob:
    """One request's inputs and where its vectors go; lives on the event loop's side."""

    inputs: list[list[int]]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[list[list[float]]]
    vectors: list[list[float] | None] = field(default_factory=list)
    remaining: int = 0
    #: Set once the job failed or was cancelled: its remaining inputs are skipped.
    failed: bool = False
    #: Set once the job stopped counting against the queue bound.
    settled: bool = False

    def __post_init__(self) -> None:
        self.vectors = [None] * len(self.inputs)
        self.remaining = len(self.inputs)


class EmbeddingQueue:
    """Inputs waiting for the backend's ``embed``, taken in arrival order a batch at a time."""

    def __init__(
        self,
        model_name: str,
        backend: StepBackend,
        metrics: EngineMetrics,
        wake: threading.Event,
        *,
        max_queue: int,
    ) -> None:
        self._backend = backend
        self._wake = wake
        self._max_queue = max_queue
        self._lock = threading.Lock()
        self._waiting: collections.deque[tuple[EmbeddingJob, int]] = collections.deque()
        self._jobs = 0
        #: Set once the queue is closed: what new requests get.
        self._closed: InferfluxError | None = None
        self._m_requests = metrics.embedding_requests.labels(model_name)
        self._m_tokens = metrics.embedding_tokens.labels(model_name)
        self._m_batch = metrics.embedding_batch_inputs.labels(model_name)

    @property
    def pending(self) -> bool:
        """True while inputs wait to be embedded."""
        return bool(self._waiting)

    def submit(self, inputs: list[list[int]]) -> asyncio.Future[list[list[float]]]:
        """Queue a request's inputs (from the event loop); await the future for the vectors.

        Raises the error the queue was closed with (a 503) and QueueFullError past
        ``max_queue`` waiting requests. Cancelling the future drops the inputs not yet embedded.
        """
        loop = asyncio.get_running_loop()
        job = EmbeddingJob(inputs, loop, loop.create_future())
        with self._lock:
            if self._closed is not None:
                raise self._closed
            if self._jobs >= self._max_queue:
                raise QueueFullError(
                    f"{self._jobs} embedding requests are waiting; retry later",
                    headers={"Retry-After": "1"},
                )
            self._jobs += 1
            self._waiting.extend((job, index) for index in range(len(inputs)))
        job.future.add_done_callback(lambda _: self._cancelled(job))
        self._wake.set()
        return job.future

    def run_batch(self) -> None:
        """Embed one batch of queued inputs (step thread); failures go to their requests."""
        if not self._waiting:
            return
        batch: list[tuple[EmbeddingJob, int]] = []
        try:
            batch = self._take_batch(self._backend.embedding_info)
            if batch:
                self._embed(batch)
        except Exception as exc:  # a backend bug must not kill the step thread
            log.exception("embedding batch failed")
            jobs = {job for job, _ in batch} if batch else self._drain()
            self._fail(jobs, BackendError(f"embedding failed: {type(exc).__name__}"))

    def _embed(self, batch: list[tuple[EmbeddingJob, int]]) -> None:
        try:
            vectors = self._backend.embed([job.inputs[index] for job, index in batch])
            if len(vectors) != len(batch):
                raise InferfluxError(f"the backend returned {len(vectors)} of {len(batch)} vectors")
        except InferfluxError as exc:
            self._fail({job for job, _ in batch}, exc)
            return
        self._m_batch.observe(len(batch))
        self._m_tokens.inc(sum(len(job.inputs[index]) for job, index in batch))
        for (job, index), vector in zip(batch, vectors, strict=True):
            if job.failed:
                continue
            job.vectors[index] = vector
            job.remaining -= 1
            if job.remaining == 0:
                self._m_requests.inc()
                self._resolve(job, job.vectors, None)

    def fail_all(self, error: InferfluxError) -> None:
        """Fail every waiting request and refuse new ones with ``error`` (the model is
        stopping, or failed)."""
        with self._lock:
            self._closed = error
        self._fail(self._drain(), error)

    def _drain(self) -> set[EmbeddingJob]:
        """Take every waiting input off the queue; returns their jobs."""
        with self._lock:
            jobs = {job for job, _ in self._waiting}
            self._waiting.clear()
        return jobs

    def _cancelled(self, job: EmbeddingJob) -> None:
        """A cancelled request's remaining inputs are skipped and its queue place freed."""
        if job.future.cancelled():
            job.failed = True
            self._settle(job)

    def _settle(self, job: EmbeddingJob) -> None:
        with self._lock:
            if not job.settled:
                job.settled = True
                self._jobs -= 1

    def _take_batch(self, limits: EmbeddingInfo) -> list[tuple[EmbeddingJob, int]]:
        batch: list[tuple[EmbeddingJob, int]] = []
        n_tokens = 0
        with self._lock:
            while self._waiting and len(batch) < limits.batch_inputs:
                job, index = self._waiting[0]
                if job.failed:
                    self._waiting.popleft()
                    continue
                size = len(job.inputs[index])
                if batch and n_tokens + size > limits.batch_tokens:
                    break
                self._waiting.popleft()
                batch.append((job, index))
                n_tokens += size
        return batch

    def _fail(self, jobs: set[EmbeddingJob], error: InferfluxError) -> None:
        for job in jobs:
            if not job.failed:
                job.failed = True
                self._resolve(job, None, error)

    def _resolve(
        self,
        job: EmbeddingJob,
        vectors: list[list[float] | None] | None,
        error: InferfluxError | None,
    ) -> None:
        self._settle(job)
        # A closed loop means nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            job.loop.call_soon_threadsafe(_settle, job.future, vectors, error)


def _settle(
    future: asyncio.Future[list[list[float]]],
    vectors: list[list[float] | None] | None,
    error: InferfluxError | None,
) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result([v for v in vectors or () if v is not None])
