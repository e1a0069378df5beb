"""Drafting with a draft model (``engine/draft_model.py``) over a fake backend whose "model"
continues every token ``t`` with ``t + 1``: what is drafted, what the draft KV holds after
each step, and how many ``decode`` calls a step costs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import pytest

from inferflux_core.contracts import ModelInfo, SamplingParams, SequenceChunk, StepBackend
from inferflux_core.engine.draft_model import DraftModel, DraftQuery, check_same_vocabulary
from inferflux_core.errors import BackendError, ConfigError

END = 99


class CountingBackend:
    """The parts of a step-level backend a draft model uses, over a plain list of tokens per
    seq id; ``calls`` records the chunks of each ``decode``."""

    def __init__(self, vocab: Sequence[bytes] = (), bos: str = "<s>") -> None:
        self.kv: dict[int, list[int]] = {}
        self.kept: dict[int, list[int]] = {}
        self.calls: list[list[SequenceChunk]] = []
        self.fail_next = False
        self.vocab = list(vocab) or [bytes([i]) for i in range(100)]
        self.bos = bos

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(2048, 2048, len(self.vocab), None, self.bos, "</s>", True)

    def token_bytes(self, token: int) -> bytes:
        return self.vocab[token]

    def open_sequence(self, seq_id: int, params: SamplingParams, *, keep_tokens: int = 0) -> None:
        assert seq_id not in self.kv, f"{seq_id} is open"
        kept = self.kept.pop(seq_id, [])
        assert keep_tokens <= len(kept)
        self.kv[seq_id] = kept[:keep_tokens]

    def free_sequence(self, seq_id: int, *, keep_kv: bool = False) -> None:
        tokens = self.kv.pop(seq_id)
        if keep_kv:
            self.kept[seq_id] = tokens

    def decode(self, chunks: Sequence[SequenceChunk]) -> dict[int, int]:
        if self.fail_next:
            self.fail_next = False
            raise BackendError("the KV cache is full")
        self.calls.append(list(chunks))
        sampled = {}
        for chunk in chunks:
            self.kv[chunk.seq_id].extend(chunk.tokens)
            if chunk.sample:
                sampled[chunk.seq_id] = (chunk.tokens[-1] + 1) % 100
        return sampled

    def is_end_of_generation(self, token: int) -> bool:
        return token == END


def draft_model(backend: CountingBackend) -> DraftModel:
    return DraftModel(cast(StepBackend, backend), "test-draft.gguf")


def test_a_sequence_catches_up_on_its_prompt_then_drafts_greedily() -> None:
    backend = CountingBackend()
    model = draft_model(backend)
    prompt = [10, 11, 12, 13, 14]
    drafts = model.propose([DraftQuery(0, "a", prompt, [20], 3)])
    assert drafts == {0: [21, 22, 23]}
    # prompt (and the last token) fed, then drafts but the last
    assert backend.kv[0] == [*prompt, 20, 21, 22]
    # one prefill call, then one call per draft position
    assert len(backend.calls) == 1 + 3


def test_after_verification_the_draft_kv_keeps_only_what_was_accepted() -> None:
    backend = CountingBackend()
    model = draft_model(backend)
    prompt = [1, 2, 3, 4, 5]
    model.propose([DraftQuery(0, "a", prompt, [6], 4)])  # drafts 7 8 9 10
    generated = [6, 7, 8, 50]  # the model accepted 7 8, then chose 50
    drafts = model.propose([DraftQuery(0, "a", prompt, generated, 2)])
    assert drafts == {0: [51, 52]}
    assert backend.kv[0] == [*prompt, *generated, 51]


def test_a_draft_accepted_whole_is_kept_and_its_last_token_fed() -> None:
    backend = CountingBackend()
    model = draft_model(backend)
    prompt = [1, 2, 3, 4, 5]
    model.propose([DraftQuery(0, "a", prompt, [6], 3)])  # drafts 7 8 9 (9 not fed)
    before = len(backend.calls)
    drafts = model.propose([DraftQuery(0, "a", prompt, [6, 7, 8, 9, 40], 2)])
    assert drafts == {0: [41, 42]}
    assert backend.kv[0] == [*prompt, 6, 7, 8, 9, 40, 41]
    # 9 and 40 are fed a token per call with the drafts: no call of its own
    assert len(backend.calls) - before == 3
    assert all(len(c.tokens) == 1 for call in backend.calls[before:] for c in call)


def test_sequences_draft_together_one_call_per_position() -> None:
    backend = CountingBackend()
    model = draft_model(backend)
    queries = [DraftQuery(s, f"r{s}", [s, s + 1, s + 2, s + 3], [s + 10], 4) for s in range(3)]
    model.propose(queries)
    backend.calls.clear()
    queries = [
        DraftQuery(q.seq_id, q.owner, q.prompt, [*q.generated, 60], 2 + q.seq_id) for q in queries
    ]
    drafts = model.propose(queries)
    assert drafts == {0: [61, 62], 1: [61, 62, 63], 2: [61, 62, 63, 64]}
    assert [len(call) for call in backend.calls] == [3, 3, 2, 1]


def test_drafting_stops_at_an_end_of_generation_token() -> None:
    backend = CountingBackend()
    model = draft_model(backend)
    drafts = model.propose([DraftQuery(0, "a", [1, 2, 3, 4], [96], 6)])
    assert drafts == {0: [97, 98, END]}


def test_release_frees_the_draft_kv_and_a_new_owner_starts_empty() -> None:
    backend = CountingBackend()
    model = draft_model(backend)
    model.propose([DraftQuery(0, "a", [1, 2, 3, 4], [5], 2)])
    model.release(0)
    assert model.open_sequences == 0 and 0 not in backend.kv and 0 not in backend.kept
    model.release(0)  # twice is nothing
    model.propose([DraftQuery(1, "b", [1, 2, 3, 4], [5], 2)])
    model.propose([DraftQuery(1, "c", [7, 8, 9, 10], [11], 2)])  # seq id 1 reused, unreleased
    assert backend.kv[1] == [7, 8, 9, 10, 11, 12]


def test_a_failed_draft_step_drafts_nothing_and_frees_the_draft_kv() -> None:
    backend = CountingBackend()
    model = draft_model(backend)
    model.propose([DraftQuery(0, "a", [1, 2, 3, 4], [5], 2)])
    backend.fail_next = True
    assert model.propose([DraftQuery(0, "a", [1, 2, 3, 4], [5, 6, 30], 2)]) == {}
    assert model.open_sequences == 0 and not backend.kv
    assert model.propose([DraftQuery(0, "a", [1, 2, 3, 4], [5, 6, 30], 2)]) == {0: [31, 32]}


@pytest.mark.parametrize(
    ("draft", "problem"),
    [
        (CountingBackend(vocab=[bytes([i]) for i in range(90)]), "90 tokens, not 100"),
        (CountingBackend(bos="<bos>"), "BOS/EOS"),
        (CountingBackend(vocab=[b"x" if i == 50 else bytes([i]) for i in range(100)]), "token 50"),
    ],
)
def test_a_draft_model_with_another_vocabulary_is_a_config_error_naming_both(
    draft: CountingBackend, problem: str
) -> None:
    target = cast(StepBackend, CountingBackend())
    with pytest.raises(ConfigError, match=problem) as caught:
        check_same_vocabulary(target, cast(StepBackend, draft), "chat", "other.gguf")
    assert "other.gguf" in caught.value.message and "model chat" in caught.value.message


def test_the_same_vocabulary_passes() -> None:
    target, draft = CountingBackend(), CountingBackend()
    check_same_vocabulary(cast(StepBackend, target), cast(StepBackend, draft), "m", "d")
