"""How a :class:`~inferflux_core.contracts.StepPlan` is applied: preempt, open, feed (with
drafted tokens, when speculating), decode, record the prefill, accept the sampled tokens.

The runner (:mod:`inferflux_core.engine.runner`) and the conformance kit's simulated engine
(:mod:`inferflux_core.testing.simulation`) both subclass :class:`PlanApplier`, so a scheduler
is checked against the same plan application that serves requests. Subclasses say what each
part does (a real backend or a simulated one); the order and the chunk arithmetic live here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Generic, TypeVar

from inferflux_core.contracts import ScheduledSequence, SequenceChunk, StepPlan
from inferflux_core.errors import InferfluxError, SequencesFailedError

S = TypeVar("S", bound=ScheduledSequence)


class PlanApplier(ABC, Generic[S]):
    """Applies one plan at a time; see the module docstring."""

    def apply(self, plan: StepPlan) -> bool:
        """Apply ``plan``; False if no chunk was left to decode."""
        for planned in plan.preempt:
            self.preempt(planned)
        fed: list[S] = []
        planned_tokens: list[int] = []
        by_seq_id: dict[int, S] = {}
        admit = self.admit
        for planned_chunk in plan.chunks:
            sequence = admit(planned_chunk.sequence)
            if sequence is None:
                continue
            seq_id = sequence.seq_id
            assert seq_id is not None, "admit must give the sequence a KV id"
            by_seq_id[seq_id] = sequence
            fed.append(sequence)
            planned_tokens.append(planned_chunk.n_tokens)
        decoding = [sequence for sequence in fed if sequence.prefill_done]
        drafted = self.draft_batch(decoding) if decoding else {}
        chunk_of = self._chunk
        chunks = [chunk_of(s, n, drafted) for s, n in zip(fed, planned_tokens, strict=True)]
        if not chunks:
            return False
        failed: SequencesFailedError | None = None
        try:
            sampled = self.decode(chunks, fed)
        except SequencesFailedError as exc:  # the step ran: only these sequences end
            failed, sampled = exc, exc.sampled
        prefilled = self.prefilled
        for sequence, chunk in zip(fed, chunks, strict=True):
            if not sequence.prefill_done:
                sequence.n_prefilled += len(chunk.tokens)
                prefilled(sequence, chunk)
        accept = self.accept
        accepted = self.take_accepted() if drafted else {}
        for seq_id, token in sampled.items():
            sequence = by_seq_id[seq_id]
            n_accepted = accepted.get(seq_id, 0)
            if n_accepted:
                self._accept_drafts(sequence, drafted[seq_id][:n_accepted], token)
            else:
                accept(sequence, token)
        if failed is not None:
            for seq_id in failed.failures:
                if seq_id in by_seq_id:
                    self.fail(by_seq_id[seq_id], failed.error_for(seq_id))
        return True

    def _chunk(
        self, sequence: S, n_planned: int, drafted: Mapping[int, Sequence[int]]
    ) -> SequenceChunk:
        """What ``sequence`` feeds this step: its last token (and its drafts, if any), or
        the next chunk of its prompt (``n_planned`` tokens as the scheduler planned)."""
        seq_id = sequence.seq_id
        assert seq_id is not None
        if sequence.prefill_done:
            drafts = drafted.get(seq_id)
            if drafts:
                tokens = (sequence.generated[-1], *drafts)
                return SequenceChunk(seq_id, tokens, draft=len(drafts))
            return SequenceChunk(seq_id, (sequence.generated[-1],))
        start = sequence.n_prefilled
        prompt = sequence.prompt_tokens
        end = self.prefill_end(sequence, start, n_planned)
        return SequenceChunk(seq_id, prompt[start:end], end == len(prompt))

    def prefill_end(self, sequence: S, start: int, planned: int) -> int:
        """Where this step's prompt chunk of ``sequence`` ends, the scheduler having planned
        ``planned`` tokens from ``start``: as planned, within the prompt (a reused prefix may
        have covered part of what the plan meant to prefill)."""
        return min(start + planned, len(sequence.prompt_tokens))

    def _accept_drafts(self, sequence: S, drafts: Sequence[int], token: int) -> None:
        """Accept the drafts the backend verified, then the token it sampled after them, in
        order, until one of them finishes the sequence (it then has no KV id)."""
        accept = self.accept
        for draft_token in drafts:
            accept(sequence, draft_token)
            if sequence.seq_id is None:
                return
        accept(sequence, token)

    def draft_batch(self, sequences: Sequence[S]) -> Mapping[int, Sequence[int]]:
        """Tokens to propose after each decoding sequence's last one, by seq id, for the
        backend to verify in this step: :meth:`draft` of each by default (a subclass may
        draft for all of them at once)."""
        drafted: dict[int, Sequence[int]] = {}
        for sequence in sequences:
            drafts = self.draft(sequence)
            if drafts:
                assert sequence.seq_id is not None
                drafted[sequence.seq_id] = drafts
        return drafted

    def draft(self, sequence: S) -> Sequence[int]:
        """Tokens to propose after a decoding sequence's last one, for the backend to verify
        in this step (none by default; see :mod:`inferflux_core.engine.speculation`)."""
        return ()

    def take_accepted(self) -> Mapping[int, int]:
        """How many drafts of each seq id the last :meth:`decode` accepted."""
        return {}

    @abstractmethod
    def preempt(self, sequence: ScheduledSequence) -> None:
        """Take a running sequence out: save its state and give its KV id back."""

    @abstractmethod
    def admit(self, sequence: ScheduledSequence) -> S | None:
        """The sequence to feed this step, with a KV id (opened now if it has none), or None
        to leave it out of this step."""

    @abstractmethod
    def decode(self, chunks: Sequence[SequenceChunk], fed: Sequence[S]) -> dict[int, int]:
        """Run ``chunks`` (of ``fed``, in order) in one step: the token sampled per seq id."""

    @abstractmethod
    def prefilled(self, sequence: S, chunk: SequenceChunk) -> None:
        """``chunk`` of ``sequence``'s prompt is in its KV (``n_prefilled`` counts it)."""

    @abstractmethod
    def accept(self, sequence: S, token: int) -> None:
        """``token`` was sampled for ``sequence``: append it, and finish it if it is done."""

    @abstractmethod
    def fail(self, sequence: S, error: InferfluxError) -> None:
        """``sequence`` failed on its own in a step that ran (the backend raised
        :class:`~inferflux_core.errors.SequencesFailedError`): end its request with ``error``
        and free its KV."""
