"""One step of a model's step loop: a plan applied to the real backend (see
:mod:`inferflux_core.engine.plan` for the order of the parts)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from inferflux_core.contracts import (
    ScheduledSequence,
    Scheduler,
    SequenceChunk,
    StepBackend,
    TokenLogprob,
)
from inferflux_core.engine import supervision
from inferflux_core.engine.draft_model import DraftQuery
from inferflux_core.engine.finish import TokenAcceptor
from inferflux_core.engine.groups import waits_for_leader
from inferflux_core.engine.lifecycle import SequenceLifecycle
from inferflux_core.engine.plan import PlanApplier
from inferflux_core.engine.row_classes import prefill_chunk_end
from inferflux_core.engine.runner_metrics import RunnerMetrics
from inferflux_core.engine.speculation import Drafter, Speculation
from inferflux_core.engine.stream import EngineSequence
from inferflux_core.errors import InferfluxError

_NO_LOGPROBS: Mapping[int, TokenLogprob] = {}


class StepApplier(PlanApplier[EngineSequence]):
    """Applies plans to ``backend``: KV through ``lifecycle``, tokens through ``tokens``;
    ``live`` holds the requests submitted and not yet finished, by request id."""

    def __init__(
        self,
        backend: StepBackend,
        scheduler: Scheduler,
        lifecycle: SequenceLifecycle,
        tokens: TokenAcceptor,
        metrics: RunnerMetrics,
        live: dict[str, EngineSequence],
        end: Callable[[Sequence[EngineSequence], Exception], None],
        speculation: Speculation | None = None,
    ) -> None:
        self.backend = backend
        self._end = end
        self.scheduler = scheduler
        self._lifecycle = lifecycle
        self._tokens = tokens
        self._m = metrics
        self._live = live
        self._step_logprobs = _NO_LOGPROBS
        #: The chunks of the last decode.
        self._drafted: Sequence[SequenceChunk] = ()
        #: The adapter the backend applies now (None: the base model).
        self._adapter: str | None = None
        #: How many tokens a step drafts per sequence (0: none).
        self._num_drafts = speculation.num_tokens if speculation is not None else 0
        self._speculation = speculation
        #: The drafter of each seq id that drafted in the last step.
        self._drafters: dict[int, Drafter] = {}

    def prefill_end(self, sequence: EngineSequence, start: int, planned: int) -> int:
        """As planned, or with row classes, the chunk their fixed pattern allows."""
        slots = self._lifecycle.slots
        if not slots.row_classes:
            return super().prefill_end(sequence, start, planned)
        n_prompt = len(sequence.prompt_tokens)
        short_below = slots.independent_below
        return prefill_chunk_end(start, planned, n_prompt, sequence.long_end, short_below)

    def preempt(self, sequence: ScheduledSequence) -> None:
        """Save a planned-out sequence's KV and give its id back."""
        live = self._live.get(sequence.request_id)
        if live is sequence:
            self._lifecycle.preempt(live)

    def admit(self, sequence: ScheduledSequence) -> EngineSequence | None:
        """The live sequence to feed, opened if it has no KV id yet; None if it must wait for
        its group's leader, or the scheduler planned a sequence that already finished."""
        live = self._live.get(sequence.request_id)
        if live is not sequence:
            self.scheduler.finish(sequence)  # a scheduler bug: it kept a finished sequence
            return None
        if waits_for_leader(live):
            return None
        if live.seq_id is None:
            self._lifecycle.open(live)
        return live

    def decode(
        self, chunks: Sequence[SequenceChunk], fed: Sequence[EngineSequence]
    ) -> dict[int, int]:
        """One backend ``decode`` for the step, and the logprobs the step's requests want."""
        self._step_logprobs = _NO_LOGPROBS
        self._apply_adapter(fed)
        self._drafted = chunks
        sampled = self.backend.decode(chunks)
        if any(s.state.request.sampling.logprobs is not None for s in fed):
            self._step_logprobs = self.backend.take_logprobs()
        self._m.step.observe(len(chunks))
        self._m.iteration_tokens.observe(sum(len(chunk.tokens) for chunk in chunks))
        return sampled

    def draft_batch(self, sequences: Sequence[EngineSequence]) -> Mapping[int, Sequence[int]]:
        """Drafts for the decoding sequences that speculate, each as many as its drafter's
        length, ``max_tokens`` and context leave room for (see :mod:`.speculation`)."""
        self._drafters = {}
        if not self._num_drafts:
            return {}
        assert self._speculation is not None
        queries: list[tuple[Drafter, DraftQuery]] = []
        for sequence in sequences:
            drafter = self._drafter(sequence)
            limit = min(
                drafter.next_length(),
                sequence.state.request.max_tokens - len(sequence.generated) - 1,
                self._tokens.context_length - sequence.kv_tokens,
            )
            if limit <= 0:
                continue
            assert sequence.seq_id is not None
            query = DraftQuery(
                sequence.seq_id,
                sequence.request_id,
                sequence.prompt_tokens,
                sequence.generated,
                limit,
            )
            queries.append((drafter, query))
            self._drafters[sequence.seq_id] = drafter
        return self._speculation.propose(queries) if queries else {}

    def _drafter(self, sequence: EngineSequence) -> Drafter:
        """The sequence's drafter, chosen on its first decode step."""
        state = sequence.state
        drafter = state.drafter
        if drafter is None:
            assert self._speculation is not None
            request = state.request
            drafter = self._speculation.drafter(request.sampling, request.speculative)
            state.drafter = drafter
        return drafter

    def take_accepted(self) -> Mapping[int, int]:
        """The backend's accepted drafts of the last decode, counted in the metrics and
        told to each drafter (which adapts its next draft's length)."""
        accepted = self.backend.take_accepted()
        self._m.drafts_verified(self._drafted, accepted)
        drafters = self._drafters
        for chunk in self._drafted:
            if chunk.draft:
                drafter = drafters.get(chunk.seq_id)
                if drafter is not None:
                    drafter.verified(chunk.draft, accepted.get(chunk.seq_id, 0))
        return accepted

    def _apply_adapter(self, fed: Sequence[EngineSequence]) -> None:
        """Give the backend the step's adapter; a plan that mixes adapters is refused."""
        adapters = {s.adapter for s in fed}
        if len(adapters) > 1:
            raise supervision.scheduler_error(
                "the scheduler planned sequences of different adapters into one step"
            )
        (adapter,) = adapters
        if adapter != self._adapter:
            self.backend.use_adapter(adapter)
            self._adapter = adapter

    def prefilled(self, sequence: EngineSequence, chunk: SequenceChunk) -> None:
        """A finished prompt is counted (once for an ``n > 1`` group), kept for reuse and
        forked."""
        if sequence.prefill_done:
            if sequence.state.leader is None:
                self._m.prompt.inc(len(sequence.prompt_tokens))
            self._lifecycle.prompt_done(sequence)

    def accept(self, sequence: EngineSequence, token: int) -> None:
        """Apply the finish rules to ``token`` (see :mod:`inferflux_core.engine.finish`)."""
        self._tokens.accept(sequence, token, self._step_logprobs)

    def fail(self, sequence: EngineSequence, error: InferfluxError) -> None:
        """End the request of a sequence that failed on its own with ``error``."""
        self._end([sequence], error)
