"""The step loop of one loaded model: a thread that drives the scheduler and the backend."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import math
import threading
import time
from collections.abc import Mapping, Sequence

from inferflux_core.contracts import (
    SamplingParams,
    ScheduledSequence,
    Scheduler,
    SequenceChunk,
    StepBackend,
    StepPlan,
    TokenLogprob,
)
from inferflux_core.engine import supervision
from inferflux_core.engine.embedding import EmbeddingQueue
from inferflux_core.engine.groups import copy_source, followers_to_fork, waits_for_leader
from inferflux_core.engine.requests import GenerationEvent, GenerationRequest
from inferflux_core.engine.slots import KVSlots
from inferflux_core.engine.stream import Outbox, RequestState, RequestStream
from inferflux_core.engine.text import TextAssembler
from inferflux_core.errors import (
    BackendError,
    ContextLengthError,
    InferfluxError,
    InvalidRequestError,
    ServiceUnavailableError,
)
from inferflux_core.metrics import EngineMetrics

log = logging.getLogger(__name__)

IDLE_WAIT_SECONDS = 0.5
DEADLINE_CHECK_SECONDS = 0.25


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
        queue_timeout: float = 0.0,
        max_queue: int = 256,
    ) -> None:
        self.model_name = model_name
        self.backend = backend
        self.scheduler = scheduler
        self.context_length = context_length
        self.queue_timeout = queue_timeout
        self._ignore_eos_bias = {t: -math.inf for t in eog_tokens}
        self.slots = KVSlots(
            max_sequences,
            reuse=prefix_reuse and backend.supports_prefix_reuse,
            align=scheduler.limits.prefill_chunk,
            independent_below=backend.independent_rows_below,
        )
        self._next_deadline_check = 0.0
        #: Whether the model still serves; see :mod:`inferflux_core.engine.supervision`.
        self.health = supervision.ModelHealth(model_name)
        self._loop = supervision.StepLoop(self, self.health)
        self._live: dict[str, ScheduledSequence] = {}
        self._cancelled: collections.deque[RequestState] = collections.deque()
        self._wake = threading.Event()
        #: Set once :meth:`stop` was called.
        self.stopping = False
        self._outbox = Outbox()
        #: Embedding requests, run on the step thread between generation steps.
        self.embeddings = EmbeddingQueue(
            model_name, backend, metrics, self._wake, max_queue=max_queue
        )
        self._thread = threading.Thread(
            target=self._loop.run, name=f"inferflux-step-{model_name}", daemon=True
        )
        self._m_step = metrics.step_sequences.labels(model_name)
        self._m_active = metrics.active_sequences.labels(model_name)
        self._m_waiting = metrics.waiting_requests.labels(model_name)
        self._m_prompt = metrics.prompt_tokens.labels(model_name)
        self._m_generated = metrics.generation_tokens.labels(model_name)
        self._m_ttft = metrics.time_to_first_token.labels(model_name)
        self._m_requests = metrics.requests
        self._m_lookups = metrics.prefix_lookups.labels(model_name)
        self._m_hits = metrics.prefix_hits.labels(model_name)
        self._m_reused = metrics.prefix_reused_tokens.labels(model_name)
        self._m_preemptions = metrics.preemptions.labels(model_name)

    @property
    def active_sequences(self) -> int:
        """Sequences that currently hold a KV ``seq_id``."""
        return sum(1 for s in list(self._live.values()) if s.seq_id is not None)

    @property
    def live_requests(self) -> int:
        """Requests submitted and not yet finished (waiting or running)."""
        return len(self._live)

    def start(self) -> None:
        """Start the step thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the step thread and fail every request still in flight."""
        self.stopping = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        self.fail_everything(ServiceUnavailableError("the server is shutting down"))

    def submit(self, request: GenerationRequest) -> RequestStream:
        """Queue a request; raises ContextLengthError / QueueFullError / ServiceUnavailable."""
        self._check(request)
        return self._queue(request, None)

    def submit_group(self, requests: Sequence[GenerationRequest]) -> list[RequestStream]:
        """Queue requests with one prompt (``n > 1``): the first prefills it, the rest copy it.

        With a backend that supports prefix reuse, the others wait while the first prefills
        the prompt and then copy its KV (all but the last prompt token, which each decodes to
        get its own first token), so the prompt is prefilled once. All are queued, or none.
        """
        for request in requests:
            self._check(request)
        if len({tuple(r.prompt_tokens) for r in requests}) > 1:
            raise ValueError("submit_group needs requests with the same prompt")
        streams: list[RequestStream] = []
        leader: ScheduledSequence | None = None
        try:
            for request in requests:
                streams.append(self._queue(request, leader))
                leader = leader or self._live[request.request_id]
        except BaseException:
            for stream in streams:
                stream.cancel()
            raise
        return streams

    def _check(self, request: GenerationRequest) -> None:
        if self.stopping:
            raise ServiceUnavailableError("the server is shutting down")
        self.health.check()
        n_prompt = len(request.prompt_tokens)
        if n_prompt >= self.context_length:
            raise ContextLengthError(
                f"the prompt has {n_prompt} tokens but the model's context length is "
                f"{self.context_length}; shorten the prompt",
                param="messages",
            )
        if n_prompt == 0:
            raise InvalidRequestError("the prompt is empty", param="prompt")

    def _queue(self, request: GenerationRequest, leader: ScheduledSequence | None) -> RequestStream:
        state = RequestState(
            request=request,
            loop=asyncio.get_running_loop(),
            assembler=TextAssembler(self.backend.token_bytes, request.stop),
            submitted_at=time.monotonic(),
        )
        if leader is not None and self.backend.supports_prefix_reuse:
            state.leader = leader
        sequence = ScheduledSequence(
            request_id=request.request_id,
            prompt_tokens=list(request.prompt_tokens),
            priority=request.priority,
            payload=state,
        )
        state.sequence = sequence
        # Tracked before the scheduler has it, so the step thread never plans an unknown one.
        self._live[request.request_id] = sequence
        if state.leader is not None:
            state.leader.payload.followers.append(sequence)
        added = False
        try:
            self.scheduler.add(sequence)
            added = True
            self.health.check()  # the step loop may have given up meanwhile
        except BaseException as exc:
            self._live.pop(request.request_id, None)
            if state.leader is not None:
                state.leader.payload.followers.remove(sequence)
            if added or not isinstance(exc, InferfluxError):  # a bug may have queued it
                with contextlib.suppress(Exception):
                    self.scheduler.finish(sequence)
            raise self._loop.supervisor.submit_error(exc) from None
        self._m_waiting.set(self.scheduler.waiting_count)
        self._wake.set()
        return RequestStream(state, self._request_cancel)

    def _request_cancel(self, state: RequestState) -> None:
        self._cancelled.append(state)
        self._wake.set()

    # --- the step thread -------------------------------------------------------------------

    def housekeep(self) -> None:
        """Free cancelled requests, expire those that waited too long, run an embedding batch."""
        self._wake.clear()
        self._reap_cancelled()
        self._expire_waiting()
        self.embeddings.run_batch()

    def idle(self, seconds: float = IDLE_WAIT_SECONDS) -> None:
        """Nothing to step: wait up to ``seconds`` for a request, unless embeddings wait."""
        self._m_active.set(self.scheduler.running_count)
        self._m_waiting.set(self.scheduler.waiting_count)
        if not self.embeddings.pending:
            self._wake.wait(seconds)

    def live_sequences(self) -> list[ScheduledSequence]:
        """The sequences of every request submitted and not yet finished."""
        return list(self._live.values())

    def fail(self, sequences: list[ScheduledSequence], error: Exception) -> None:
        """End ``sequences`` with ``error`` now; a release that fails does not stop the others."""
        for sequence in sequences:
            try:
                self._finish(sequence, "error", error, keep_kv=False)
            except Exception:
                log.warning("model %s: could not free a failed sequence", self.model_name)
        self.flush()

    def fail_everything(self, error: ServiceUnavailableError) -> None:
        """Fail every live request and queued embedding (the model stops, or failed)."""
        self.fail(self.live_sequences(), error)
        self.embeddings.fail_all(error)

    def run_step(self, plan: StepPlan) -> None:
        """Open, feed and sample the plan's sequences in one ``decode``; emit their events."""
        for sequence in plan.preempt:
            self._preempt(sequence)
        chunks: list[SequenceChunk] = []
        fed: list[ScheduledSequence] = []
        by_seq_id: dict[int, ScheduledSequence] = {}
        for planned in plan.chunks:
            sequence = planned.sequence
            if self._live.get(sequence.request_id) is not sequence:
                self.scheduler.finish(sequence)  # a scheduler bug: it kept a finished sequence
                continue
            if waits_for_leader(sequence):
                continue
            if sequence.seq_id is None:
                self._open(sequence)
            seq_id = sequence.seq_id
            assert seq_id is not None
            by_seq_id[seq_id] = sequence
            if sequence.prefill_done:
                chunks.append(SequenceChunk(seq_id, (sequence.generated[-1],)))
            else:
                start = sequence.n_prefilled
                # A reused prefix may have covered part of what the plan meant to prefill.
                end = min(start + planned.n_tokens, len(sequence.prompt_tokens))
                prompt = sequence.prompt_tokens
                chunks.append(SequenceChunk(seq_id, prompt[start:end], end == len(prompt)))
            fed.append(sequence)
        if not chunks:
            return
        sampled = self.backend.decode(chunks)
        logprobs = self.backend.take_logprobs() if self._wants_logprobs(fed) else {}
        self._m_step.observe(len(chunks))
        for sequence, chunk in zip(fed, chunks, strict=True):
            if not sequence.prefill_done:
                sequence.n_prefilled += len(chunk.tokens)
                self._m_prompt.inc(len(chunk.tokens))
                if sequence.prefill_done:
                    self.slots.prompt_prefilled(chunk.seq_id, sequence.prompt_tokens)
                    self._fork_followers(sequence)
        for seq_id, token in sampled.items():
            self._accept(by_seq_id[seq_id], token, logprobs)
        self._m_active.set(self.scheduler.running_count)
        self._m_waiting.set(self.scheduler.waiting_count)

    @staticmethod
    def _wants_logprobs(sequences: list[ScheduledSequence]) -> bool:
        return any(s.payload.request.sampling.logprobs is not None for s in sequences)

    def _fork_followers(self, leader: ScheduledSequence) -> None:
        """The leader's prompt is in its KV: admitted followers copy it now, before the
        leader can finish and give its KV up."""
        for follower in followers_to_fork(leader):
            self._open(follower)

    def _sampling(self, state: RequestState) -> SamplingParams:
        params = state.request.sampling
        if state.request.ignore_eos and self._ignore_eos_bias:
            bias = dict(params.logit_bias or {})
            bias.update(self._ignore_eos_bias)
            params = _with_logit_bias(params, bias)
        return params

    def _open(self, sequence: ScheduledSequence) -> None:
        """Give an admitted sequence a KV id: restore it, copy its leader's prompt, reuse a
        cached prefix, or start empty."""
        if sequence.saved is not None:
            seq_id = self._allocate()
            self.backend.restore_sequence(seq_id, sequence.saved)
            sequence.saved = None
            sequence.seq_id = seq_id
            return
        state: RequestState = sequence.payload
        params = self._sampling(state)
        leader = copy_source(sequence)
        if leader is not None:
            self._fork(sequence, leader, params)
            return
        hit = self.slots.find_prefix(sequence.prompt_tokens) if self.slots.reuse else None
        if self.slots.reuse:
            self._m_lookups.inc()
        if hit is not None and hit.idle:
            seq_id = self.slots.take_idle(hit.source)
            self.backend.open_sequence(seq_id, params, keep_tokens=hit.n_tokens)
        else:
            seq_id = self._allocate()
            self.backend.open_sequence(seq_id, params)
            if hit is not None:
                self.backend.copy_prefix(hit.source, seq_id, hit.n_tokens)
        sequence.seq_id = seq_id
        if hit is not None:
            sequence.n_prefilled = hit.n_tokens
            self._m_hits.inc()
            self._m_reused.inc(hit.n_tokens)

    def _fork(
        self, sequence: ScheduledSequence, leader: ScheduledSequence, params: SamplingParams
    ) -> None:
        """Copy all but the last prompt token from the leader's KV; the sequence decodes the
        last one itself, for logits of its own to sample from."""
        assert leader.seq_id is not None
        seq_id = self._allocate()
        self.backend.open_sequence(seq_id, params)
        sequence.seq_id = seq_id
        n_copy = len(sequence.prompt_tokens) - 1
        if n_copy > 0:
            self.backend.copy_prefix(leader.seq_id, seq_id, n_copy)
            sequence.n_prefilled = n_copy
            self._m_hits.inc()
            self._m_reused.inc(n_copy)

    def _allocate(self) -> int:
        seq_id = self.slots.allocate()
        if seq_id is None:
            raise supervision.scheduler_error(
                "no free KV sequence id (the scheduler admitted too many)"
            )
        return seq_id

    def _preempt(self, sequence: ScheduledSequence) -> None:
        """Save a running sequence's state and give its KV id back; it waits to resume."""
        if sequence.seq_id is None:
            return
        sequence.saved = self.backend.save_sequence(sequence.seq_id)
        self.slots.forget(sequence.seq_id)
        sequence.seq_id = None
        self._m_preemptions.inc()

    def _accept(
        self, sequence: ScheduledSequence, token: int, logprobs: Mapping[int, TokenLogprob]
    ) -> None:
        state: RequestState = sequence.payload
        request = state.request
        assert sequence.seq_id is not None
        logprob = logprobs.get(sequence.seq_id)
        if request.sampling.logprobs is not None and logprob is None:
            raise BackendError(f"the backend gave no logprobs for sequence {sequence.seq_id}")
        sequence.generated.append(token)
        n_generated = len(sequence.generated)
        if n_generated == 1:
            self._m_ttft.observe(time.monotonic() - state.submitted_at)
        finish: str | None = None
        if self.backend.is_end_of_generation(token):
            text = ""
            if not request.ignore_eos and n_generated > request.min_tokens:
                finish = "stop"
                text = state.assembler.flush()
        else:
            if logprob is not None:
                state.pending_logprobs.append(logprob)
            text, stopped = state.assembler.push(token)
            if stopped:
                finish = "stop"
        if finish is None and (
            n_generated >= request.max_tokens or sequence.kv_tokens >= self.context_length
        ):
            finish = "length"
            text += state.assembler.flush()
        released = state.release_logprobs(finished=finish is not None)
        self._emit(state, sequence, text, (token,), finish, logprobs=released)
        if finish is not None:
            self._release(sequence, finish)

    def _emit(
        self,
        state: RequestState,
        sequence: ScheduledSequence,
        text: str,
        tokens: tuple[int, ...],
        finish: str | None,
        error: Exception | None = None,
        *,
        logprobs: tuple[TokenLogprob, ...] = (),
    ) -> None:
        event = GenerationEvent(
            text=text,
            token_ids=tokens,
            n_prompt_tokens=len(sequence.prompt_tokens),
            n_generated_tokens=len(sequence.generated),
            finish_reason=finish,
            error=error,
            logprobs=logprobs,
        )
        self._outbox.put(state, event)

    def _finish(
        self,
        sequence: ScheduledSequence,
        reason: str,
        error: Exception | None,
        *,
        keep_kv: bool = True,
    ) -> None:
        """End a sequence early (error, cancel): tell its consumer, then release it."""
        if sequence.request_id not in self._live:
            return
        self._emit(sequence.payload, sequence, "", (), reason, error)
        self._release(sequence, reason, keep_kv=keep_kv)

    def _release(self, sequence: ScheduledSequence, reason: str, *, keep_kv: bool = True) -> None:
        """Forget a sequence and free its KV id, even if the scheduler or backend raise."""
        self._live.pop(sequence.request_id, None)
        self._m_generated.inc(len(sequence.generated))
        self._m_requests.labels(self.model_name, reason).inc()
        sequence.saved = None
        try:
            self.scheduler.finish(sequence)
        finally:
            seq_id = sequence.seq_id
            if seq_id is not None:
                sequence.seq_id = None
                prompt_in_kv = sequence.prompt_tokens[: sequence.n_prefilled] if keep_kv else []
                kept = self.slots.release(seq_id, prompt_in_kv)
                try:
                    self.backend.free_sequence(seq_id, keep_kv=kept)
                except Exception:
                    self.slots.forget(seq_id)
                    raise

    def _expire_waiting(self) -> None:
        """Fail requests that waited for admission longer than ``queue_timeout``."""
        now = time.monotonic()
        if self.queue_timeout <= 0 or now < self._next_deadline_check:
            return
        self._next_deadline_check = now + DEADLINE_CHECK_SECONDS
        for sequence in supervision.overdue(self.live_sequences(), now - self.queue_timeout):
            self._finish(sequence, "error", supervision.queue_timeout_error(self.queue_timeout))

    def _reap_cancelled(self) -> None:
        while self._cancelled:
            state = self._cancelled.popleft()
            if state.sequence is not None:
                self._finish(state.sequence, "cancelled", None)

    def flush(self) -> None:
        """Hand the events of this step to the event loops of their requests."""
        self._outbox.flush()


def _with_logit_bias(params: SamplingParams, bias: dict[int, float]) -> SamplingParams:
    return dataclasses.replace(params, logit_bias=bias)
