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
    SequenceStatus,
    StepBackend,
    StepPlan,
    TokenLogprob,
)
from inferflux_core.engine.embedding import EmbeddingQueue
from inferflux_core.engine.groups import copy_source, followers_to_fork, waits_for_leader
from inferflux_core.engine.requests import GenerationEvent, GenerationRequest
from inferflux_core.engine.slots import KVSlots
from inferflux_core.engine.stream import RequestState, RequestStream
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
        self._live: dict[str, ScheduledSequence] = {}
        self._cancelled: collections.deque[RequestState] = collections.deque()
        self._wake = threading.Event()
        self._stopping = False
        self._outbox: dict[asyncio.AbstractEventLoop, list[tuple[RequestState, GenerationEvent]]]
        self._outbox = {}
        #: Embedding requests, run on the step thread between generation steps.
        self.embeddings = EmbeddingQueue(
            model_name, backend, metrics, self._wake, max_queue=max_queue
        )
        self._thread = threading.Thread(
            target=self._run, name=f"inferflux-step-{model_name}", daemon=True
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
        self._stopping = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        for sequence in list(self._live.values()):
            self._finish(sequence, "error", ServiceUnavailableError("the server is shutting down"))
        self._flush()
        self.embeddings.fail_all(ServiceUnavailableError("the server is shutting down"))

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
        if self._stopping:
            raise ServiceUnavailableError("the server is shutting down")
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
        if state.leader is not None:
            state.leader.payload.followers.append(sequence)
        self.scheduler.add(sequence)
        self._live[request.request_id] = sequence
        self._m_waiting.set(self.scheduler.waiting_count)
        self._wake.set()
        return RequestStream(state, self._request_cancel)

    def _request_cancel(self, state: RequestState) -> None:
        self._cancelled.append(state)
        self._wake.set()

    # --- the step thread -------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            self._reap_cancelled()
            self._expire_waiting()
            self.embeddings.run_batch()
            plan = self.scheduler.plan_step()
            if not plan:
                self._m_active.set(0)
                self._m_waiting.set(self.scheduler.waiting_count)
                if not self.embeddings.pending:
                    self._wake.wait(IDLE_WAIT_SECONDS)
                continue
            try:
                self._step(plan)
            except InferfluxError as exc:
                log.error("model %s: step failed: %s", self.model_name, exc)
                self._fail(plan, exc)
            except Exception as exc:  # a backend bug must not kill the step thread
                log.exception("model %s: step failed", self.model_name)
                self._fail(plan, InferfluxError(f"the backend failed: {type(exc).__name__}"))
            self._flush()

    def _fail(self, plan: StepPlan, error: InferfluxError) -> None:
        for sequence in [*plan.preempt, *(chunk.sequence for chunk in plan.chunks)]:
            self._finish(sequence, "error", error, keep_kv=False)

    def _step(self, plan: StepPlan) -> None:
        for sequence in plan.preempt:
            self._preempt(sequence)
        chunks: list[SequenceChunk] = []
        fed: list[ScheduledSequence] = []
        by_seq_id: dict[int, ScheduledSequence] = {}
        for planned in plan.chunks:
            sequence = planned.sequence
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
            raise BackendError("no free KV sequence id (the scheduler admitted too many)")
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
        self._outbox.setdefault(state.loop, []).append((state, event))

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
        self.scheduler.finish(sequence)
        sequence.saved = None
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
        self._live.pop(sequence.request_id, None)
        self._m_generated.inc(len(sequence.generated))
        self._m_requests.labels(self.model_name, reason).inc()

    def _expire_waiting(self) -> None:
        """Fail requests that waited for admission longer than ``queue_timeout``."""
        if self.queue_timeout <= 0:
            return
        now = time.monotonic()
        if now < self._next_deadline_check:
            return
        self._next_deadline_check = now + DEADLINE_CHECK_SECONDS
        for sequence in list(self._live.values()):
            state: RequestState = sequence.payload
            never_started = sequence.seq_id is None and sequence.saved is None
            if (
                never_started
                and sequence.status is SequenceStatus.WAITING
                and now - state.submitted_at > self.queue_timeout
            ):
                error = ServiceUnavailableError(
                    f"the request waited {self.queue_timeout:g} s for a free slot; retry later",
                    code="queue_timeout",
                    headers={"Retry-After": "1"},
                )
                self._finish(sequence, "error", error)

    def _reap_cancelled(self) -> None:
        while self._cancelled:
            state = self._cancelled.popleft()
            if state.sequence is not None:
                self._finish(state.sequence, "cancelled", None)

    def _flush(self) -> None:
        outbox, self._outbox = self._outbox, {}
        for loop, events in outbox.items():
            # A closed loop means nobody is listening any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_deliver, events)


def _deliver(events: list[tuple[RequestState, GenerationEvent]]) -> None:
    for state, event in events:
        state.queue.put_nowait(event)


def _with_logit_bias(params: SamplingParams, bias: dict[int, float]) -> SamplingParams:
    return dataclasses.replace(params, logit_bias=bias)
