"""Draft verification in the llama.cpp backend (speculative decoding) against the real model:
a decode step that carries drafts gives exactly the tokens plain greedy decoding gives."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest

from inferflux_core.contracts import SamplingParams, SequenceChunk
from inferflux_core.errors import BackendError
from inferflux_plugins.backends.llama_cpp import LlamaCppBackend
from tests.backend.test_llama_cpp_backend import GREEDY, chat, generate, load

PARAGRAPH = (
    "The old lighthouse stood at the edge of the cliff for more than a hundred years. Every "
    "night its keeper climbed the narrow stairs and polished the great lens, so that ships "
    "passing in the dark would know where the rocks were."
)
REWRITE = f"Repeat this paragraph word for word:\n\n{PARAGRAPH}"
STORY = "Tell me a short story about a dragon."
N_TOKENS = 40


@pytest.fixture(scope="module")
def backend() -> Iterator[LlamaCppBackend]:
    """The default configuration: per-sequence KV, 4 sequences of 1024 tokens each."""
    loaded = load(context_length=1024, max_sequences=4)
    yield loaded
    loaded.close()


def speculate(
    backend: LlamaCppBackend,
    prompts: dict[int, list[int]],
    drafts_for: dict[int, Sequence[Sequence[int]]],
) -> tuple[dict[int, list[int]], list[dict[int, int]]]:
    """Each sequence's output when its ``i``-th decode step carries ``drafts_for[seq][i]``
    (then plain steps), up to :data:`N_TOKENS`; and what each step accepted."""
    for seq_id in prompts:
        backend.open_sequence(seq_id, GREEDY)
    try:
        first = backend.decode([SequenceChunk(s, p) for s, p in prompts.items()])
        out = {seq_id: [token] for seq_id, token in first.items()}
        accepted: list[dict[int, int]] = []
        step = 0
        while any(len(tokens) < N_TOKENS for tokens in out.values()):
            chunks, proposed = [], {}
            for seq_id, tokens in out.items():
                if len(tokens) >= N_TOKENS:
                    continue
                plan = drafts_for.get(seq_id, ())
                drafts = list(plan[step]) if step < len(plan) else []
                drafts = drafts[: N_TOKENS - len(tokens) - 1]
                proposed[seq_id] = drafts
                chunks.append(SequenceChunk(seq_id, (tokens[-1], *drafts), draft=len(drafts)))
            sampled = backend.decode(chunks)
            took = backend.take_accepted()
            accepted.append(took)
            for seq_id, token in sampled.items():
                out[seq_id] += [*proposed[seq_id][: took.get(seq_id, 0)], token]
            step += 1
        return {s: t[:N_TOKENS] for s, t in out.items()}, accepted
    finally:
        for seq_id in prompts:
            backend.free_sequence(seq_id)


def test_the_default_cpu_backend_verifies_drafts(backend: LlamaCppBackend) -> None:
    assert backend.supports_speculation
    unified = load(context_length=256, max_sequences=2, kv_unified=True)
    try:
        assert not unified.supports_speculation  # a shared stream gives no exactness promise
    finally:
        unified.close()


def test_right_drafts_are_accepted_and_give_the_plain_greedy_output(
    backend: LlamaCppBackend,
) -> None:
    prompt = chat(backend, REWRITE)
    plain = generate(backend, {0: prompt}, N_TOKENS)[0]
    # the true continuation, 4 tokens at a time: every draft is accepted
    right = [plain[1 + 5 * i : 1 + 5 * i + 4] for i in range(N_TOKENS // 5)]
    out, accepted = speculate(backend, {0: prompt}, {0: right})
    assert out[0] == plain
    assert [a[0] for a in accepted[:3]] == [4, 4, 4]


def test_wrong_drafts_are_rejected_and_their_kv_is_dropped(backend: LlamaCppBackend) -> None:
    prompt = chat(backend, STORY)
    plain = generate(backend, {0: prompt}, N_TOKENS)[0]
    wrong_after_two = [[*plain[1:3], (plain[3] + 1) % 1000, 5, 6], [7, 8, 9]]
    out, accepted = speculate(backend, {0: prompt}, {0: wrong_after_two})
    assert out[0] == plain
    assert accepted[0][0] == 2
    # what the next chunk continues after: the prompt and every accepted token
    backend.open_sequence(1, GREEDY)
    try:
        backend.decode([SequenceChunk(1, prompt)])
        backend.decode([SequenceChunk(1, (plain[0], *plain[1:4], 11, 12), draft=5)])
        assert backend.take_accepted() == {1: 3}
        assert backend._positions[1] == len(prompt) + 4
    finally:
        backend.free_sequence(1)


def test_sequences_with_drafts_of_different_lengths_share_a_step(
    backend: LlamaCppBackend,
) -> None:
    prompts = {0: chat(backend, REWRITE), 1: chat(backend, STORY), 2: chat(backend, REWRITE)}
    plain = generate(backend, prompts, N_TOKENS)
    drafts = {
        0: [plain[0][1:4], plain[0][5:6], [1, 2, 3, 4, 5]],
        2: [[3], plain[2][2:9]],
    }
    out, _ = speculate(backend, prompts, drafts)
    assert out == plain


def test_a_sequence_with_sampler_state_refuses_drafts(backend: LlamaCppBackend) -> None:
    backend.open_sequence(0, SamplingParams(temperature=0.0, grammar='root ::= "yes" | "no"'))
    try:
        first = backend.decode([SequenceChunk(0, chat(backend, "Yes or no?"))])
        with pytest.raises(BackendError, match="cannot take drafts"):
            backend.decode([SequenceChunk(0, (first[0], 5), draft=1)])
    finally:
        backend.free_sequence(0)
