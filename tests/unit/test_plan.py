"""Plan application (``engine/plan.py``): the order of its parts and the chunk arithmetic,
shared by the runner and the conformance kit's simulated engine."""

from __future__ import annotations

from collections.abc import Sequence

from inferflux_core.contracts import ScheduledChunk, ScheduledSequence, SequenceChunk, StepPlan
from inferflux_core.engine.plan import PlanApplier
from inferflux_core.engine.step import StepApplier
from inferflux_core.errors import InferfluxError, SequencesFailedError
from inferflux_core.testing.simulation import SimulatedEngine


class Recorder(PlanApplier[ScheduledSequence]):
    """A test double that records what each part was asked to do."""

    def __init__(self, skip: frozenset[str] = frozenset()) -> None:
        self.calls: list[tuple[str, str]] = []
        self.fed: list[SequenceChunk] = []
        self.skip = skip
        self.next_id = 0

    def preempt(self, sequence: ScheduledSequence) -> None:
        self.calls.append(("preempt", sequence.request_id))

    def admit(self, sequence: ScheduledSequence) -> ScheduledSequence | None:
        if sequence.request_id in self.skip:
            return None
        if sequence.seq_id is None:
            sequence.seq_id, self.next_id = self.next_id, self.next_id + 1
            if sequence.request_id == "reused":
                sequence.n_prefilled = 6  # a cached prefix covered more than the plan knew
        return sequence

    def decode(
        self, chunks: Sequence[SequenceChunk], fed: Sequence[ScheduledSequence]
    ) -> dict[int, int]:
        self.fed = list(chunks)
        self.calls.append(("decode", ",".join(s.request_id for s in fed)))
        return {c.seq_id: 42 for c in chunks if c.sample}

    def prefilled(self, sequence: ScheduledSequence, chunk: SequenceChunk) -> None:
        self.calls.append(("prefilled", f"{sequence.request_id}:{sequence.n_prefilled}"))

    def accept(self, sequence: ScheduledSequence, token: int) -> None:
        sequence.generated.append(token)
        self.calls.append(("accept", sequence.request_id))

    def fail(self, sequence: ScheduledSequence, error: InferfluxError) -> None:
        self.calls.append(("fail", f"{sequence.request_id}:{error.message}"))


def _sequence(name: str, n_prompt: int) -> ScheduledSequence:
    return ScheduledSequence(request_id=name, prompt_tokens=list(range(100, 100 + n_prompt)))


def test_a_plan_preempts_then_feeds_then_records_prefill_then_accepts() -> None:
    decoding = _sequence("decoding", 2)
    decoding.n_prefilled, decoding.generated = 2, [7]
    reused = _sequence("reused", 8)
    partial = _sequence("partial", 10)
    plan = StepPlan(
        chunks=[
            ScheduledChunk(decoding, 1),
            ScheduledChunk(reused, 4),
            ScheduledChunk(partial, 4),
            ScheduledChunk(_sequence("waits", 3), 3),
        ],
        preempt=[_sequence("out", 1)],
    )
    applier = Recorder(skip=frozenset({"waits"}))
    assert applier.apply(plan)
    assert [(c.tokens, c.sample) for c in applier.fed] == [
        ((7,), True),  # a decode step feeds the last generated token
        ([106, 107], True),  # clamped to the prompt: the reused prefix covered 6 of 8
        ([100, 101, 102, 103], False),  # not the prompt's end: nothing to sample
    ]
    assert applier.calls == [
        ("preempt", "out"),
        ("decode", "decoding,reused,partial"),
        ("prefilled", "reused:8"),
        ("prefilled", "partial:4"),
        ("accept", "decoding"),
        ("accept", "reused"),
    ]


def test_a_plan_with_nothing_to_feed_decodes_nothing() -> None:
    applier = Recorder(skip=frozenset({"waits"}))
    assert not applier.apply(StepPlan(chunks=[ScheduledChunk(_sequence("waits", 3), 3)]))
    assert applier.calls == []


def test_the_runner_and_the_simulated_engine_apply_plans_with_the_same_code() -> None:
    assert StepApplier.apply is PlanApplier.apply
    assert SimulatedEngine.apply is PlanApplier.apply


class FailingOne(Recorder):
    """A test double whose decode fails sequence ``seq_id`` alone, as a backend whose grammar
    for that sequence cannot go on does."""

    def __init__(self, seq_id: int) -> None:
        super().__init__()
        self.failing = seq_id

    def decode(
        self, chunks: Sequence[SequenceChunk], fed: Sequence[ScheduledSequence]
    ) -> dict[int, int]:
        sampled = super().decode(chunks, fed)
        del sampled[self.failing]
        raise SequencesFailedError(sampled, {self.failing: "grammar failed"})


def test_a_sequence_that_fails_alone_is_failed_and_the_others_are_accepted() -> None:
    ok, bad = _sequence("ok", 3), _sequence("bad", 3)
    applier = FailingOne(seq_id=1)
    plan = StepPlan(chunks=[ScheduledChunk(ok, 3), ScheduledChunk(bad, 3)])
    assert applier.apply(plan)
    assert ("accept", "ok") in applier.calls and ("accept", "bad") not in applier.calls
    assert applier.calls[-1] == ("fail", "bad:grammar failed")
    assert ("prefilled", "bad:3") in applier.calls  # its chunk is in the KV all the same


class Drafting(Recorder):
    """A test double whose decoding sequences draft ``drafts`` and whose backend accepts
    ``n_accepted`` of them, sampling token 42 after the last accepted one."""

    def __init__(self, drafts: Sequence[int], n_accepted: int, finish_at: int = 0) -> None:
        super().__init__()
        self.drafts = list(drafts)
        self.n_accepted = n_accepted
        self.finish_at = finish_at

    def draft(self, sequence: ScheduledSequence) -> Sequence[int]:
        return self.drafts

    def take_accepted(self) -> dict[int, int]:
        return {c.seq_id: self.n_accepted for c in self.fed if c.draft}

    def accept(self, sequence: ScheduledSequence, token: int) -> None:
        super().accept(sequence, token)
        if self.finish_at and len(sequence.generated) >= self.finish_at:
            sequence.seq_id = None  # released, as a finished sequence is


def _decoding(name: str) -> ScheduledSequence:
    sequence = _sequence(name, 2)
    sequence.n_prefilled, sequence.generated = 2, [7]
    return sequence


def test_a_decoding_sequence_feeds_its_drafts_after_its_last_token() -> None:
    decoding, prefilling = _decoding("decoding"), _sequence("prefilling", 3)
    applier = Drafting([8, 9, 10], n_accepted=2)
    applier.apply(StepPlan(chunks=[ScheduledChunk(decoding, 1), ScheduledChunk(prefilling, 3)]))
    assert applier.fed[0] == SequenceChunk(0, (7, 8, 9, 10), draft=3)
    assert applier.fed[1] == SequenceChunk(1, [100, 101, 102], True)  # prompts never draft
    assert decoding.generated == [7, 8, 9, 42]  # the accepted drafts, then the sampled token


def test_a_sequence_that_finishes_on_an_accepted_draft_takes_nothing_after_it() -> None:
    decoding = _decoding("decoding")
    applier = Drafting([8, 9, 10], n_accepted=3, finish_at=2)
    applier.apply(StepPlan(chunks=[ScheduledChunk(decoding, 1)]))
    assert decoding.generated == [7, 8]


def test_rejected_drafts_leave_the_sampled_token_only() -> None:
    decoding = _decoding("decoding")
    applier = Drafting([8, 9], n_accepted=0)
    applier.apply(StepPlan(chunks=[ScheduledChunk(decoding, 1)]))
    assert decoding.generated == [7, 42]
