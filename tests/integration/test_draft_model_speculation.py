"""Speculative decoding with a draft model on a real server: the default model drafts for
itself (``draft_model`` is its own source), so nearly every draft is accepted, and greedy
output is the same with and without drafts, alone, batched and streamed; a sequence's draft
KV goes when it ends, is cancelled or is preempted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from inferflux_core.config import DEFAULT_MODEL_SOURCE, ModelConfig, Settings
from inferflux_core.engine import Engine
from inferflux_core.errors import ConfigError
from tests.conftest import MODEL_NAME, RunningServer
from tests.integration.test_speculative_decoding import (
    ACCEPTED,
    DRAFT_TOKENS,
    PARAGRAPH,
    REWRITE,
    STORY,
    chat,
    check_a_preempted_sequence_resumes_with_the_same_tokens,
    collect,
    counters,
    greedy_request,
    grew,
    idle_after,
    preemption_engine,
    speculating_server,
    streamed_and_plain,
    text_of,
)

DRAFTING = {"method": "draft_model", "draft_model": DEFAULT_MODEL_SOURCE, "num_tokens": 6}


@pytest.fixture(scope="module")
def served() -> Iterator[RunningServer]:
    """The default model drafting for itself (4 sequences)."""
    running = speculating_server(DRAFTING)
    yield running
    running.stop()


@pytest.fixture
def http(served: RunningServer) -> Iterator[httpx.Client]:
    with idle_after(served) as client:
        yield client
    draft = served.engine.model(MODEL_NAME).draft_model
    assert draft is not None and draft.open_sequences == 0, "a draft KV sequence leaked"


@pytest.mark.parametrize("prompt", [REWRITE, STORY], ids=["rewrite", "story"])
def test_greedy_output_is_the_same_with_and_without_the_draft_model(
    http: httpx.Client, prompt: str
) -> None:
    plain = chat(http, prompt, speculative=False)
    before = counters(http)
    drafted = chat(http, prompt)
    after = counters(http)
    assert text_of(drafted) == text_of(plain)
    assert drafted["usage"] == plain["usage"]
    assert drafted["choices"][0]["finish_reason"] == plain["choices"][0]["finish_reason"]
    proposed, accepted = grew(before, after, DRAFT_TOKENS), grew(before, after, ACCEPTED)
    assert proposed > 0
    assert accepted >= 0.9 * proposed  # the model drafting for itself agrees with itself


def test_batched_sequences_drafting_give_what_each_gives_alone(http: httpx.Client) -> None:
    prompts = [REWRITE, STORY, f"Copy this text exactly:\n\n{PARAGRAPH}", STORY]
    alone = [text_of(chat(http, p, speculative=False)) for p in prompts]
    before = counters(http)
    with ThreadPoolExecutor(len(prompts)) as pool:
        together = list(pool.map(lambda p: text_of(chat(http, p)), prompts))
    after = counters(http)
    assert together == alone
    assert grew(before, after, ACCEPTED) >= 0.9 * grew(before, after, DRAFT_TOKENS) > 0


def test_a_completion_streams_the_same_text_with_the_draft_model(http: httpx.Client) -> None:
    streamed, plain = streamed_and_plain(http, STORY)
    assert streamed == plain


@pytest.mark.parametrize(
    "fields",
    [{"speculative": False}, {"temperature": 0.8, "seed": 3}, {"logprobs": True}],
    ids=["opted-out", "sampled", "logprobs"],
)
def test_requests_that_opt_out_or_sample_with_state_get_no_model_drafts(
    http: httpx.Client, fields: dict[str, Any]
) -> None:
    before = counters(http)
    chat(http, STORY, **fields)
    assert grew(before, counters(http), DRAFT_TOKENS) == 0


def test_many_sequences_in_a_row_free_their_draft_kv_in_a_small_context() -> None:
    engine = preemption_engine(DRAFTING, context_length=256, max_sequences=2)
    try:
        model = engine.model(MODEL_NAME)
        draft = model.draft_model
        assert draft is not None
        prompts = [model.tokenize_prompt(p) for p in (REWRITE, STORY)]

        async def scenario() -> tuple[list[list[int]], list[list[int]]]:
            plain = [
                await collect(engine, greedy_request(f"p{i}", p, 100, speculative=False))
                for i, p in enumerate(prompts)
            ]
            rounds = []
            for i in range(12):  # each nearly fills its 256 tokens; twice as many as seq ids
                prompt = prompts[i % 2]
                rounds.append(await collect(engine, greedy_request(f"r{i}", prompt, 100)))
            together = await asyncio.gather(
                *(collect(engine, greedy_request(f"t{i}", prompts[i % 2], 100)) for i in range(4))
            )
            await collect(engine, greedy_request("cancelled", prompts[0], 100), stop_after=5)
            return plain, [*rounds, *together]

        plain, drafted = asyncio.run(scenario())
        assert all(tokens == plain[i % 2] for i, tokens in enumerate(drafted[:12]))
        assert all(tokens == plain[i % 2] for i, tokens in enumerate(drafted[12:]))
        deadline = time.monotonic() + 10
        while model.runner.active_sequences and time.monotonic() < deadline:
            time.sleep(0.05)  # the cancelled request is freed at the next step
        assert draft.open_sequences == 0
        assert not any(draft.backend._positions)  # type: ignore[attr-defined]
    finally:
        engine.unload()


def test_a_preempted_sequence_drafting_with_the_model_resumes_with_the_same_tokens() -> None:
    engine = preemption_engine(DRAFTING, context_length=1024, max_sequences=1)
    try:
        check_a_preempted_sequence_resumes_with_the_same_tokens(engine)
        draft = engine.model(MODEL_NAME).draft_model
        assert draft is not None and draft.open_sequences == 0
    finally:
        engine.unload()


def test_a_draft_model_that_cannot_be_found_is_a_load_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "draft.gguf"
    spec = {**DRAFTING, "draft_model": str(missing)}
    engine = Engine(Settings(models=[ModelConfig(name=MODEL_NAME, speculative=spec)]))
    try:
        with pytest.raises(ConfigError, match=r"draft\.gguf"):
            engine.load()
    finally:
        engine.unload()


def test_drafts_the_model_rejects_are_dropped_from_the_draft_kv(
    served: RunningServer, http: httpx.Client
) -> None:
    # the model samples with a logit bias the draft model does not know: some drafts fail
    backend = served.engine.model(MODEL_NAME).backend
    banned = {
        str(t): -100 for w in (" the", " a", ",") for t in backend.tokenize(w, add_special=False)
    }
    plain = chat(http, STORY, logit_bias=banned, speculative=False)
    before = counters(http)
    drafted = chat(http, STORY, logit_bias=banned)
    after = counters(http)
    assert text_of(drafted) == text_of(plain)
    proposed, accepted = grew(before, after, DRAFT_TOKENS), grew(before, after, ACCEPTED)
    assert 0 < accepted < proposed
