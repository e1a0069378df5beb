"""Speculative decoding (n-gram prompt lookup) on a real server: greedy output is the same
with and without drafts, alone and batched; drafts show in vLLM's ``spec_decode`` metrics;
requests that opt out or sample with state get none."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from inferflux_core.config import ModelConfig, SchedulerConfig, Settings
from inferflux_core.contracts import SamplingParams
from inferflux_core.engine import Engine, GenerationRequest
from tests.conftest import MODEL_NAME, RunningServer, free_port, start_server

PARAGRAPH = (
    "The old lighthouse stood at the edge of the cliff for more than a hundred years. Every "
    "night its keeper climbed the narrow stairs, trimmed the wick and polished the great lens, "
    "so that ships passing in the dark would know where the rocks were. When the keeper grew "
    "old, the town put in an electric lamp, and the stairs were climbed once a month."
)
REWRITE = f"Repeat this paragraph word for word:\n\n{PARAGRAPH}"
STORY = "Tell me a short story about a dragon who learns to bake bread."
MAX_TOKENS = 48
DRAFTS = "inferflux_spec_decode_num_drafts_total"
DRAFT_TOKENS = "inferflux_spec_decode_num_draft_tokens_total"
ACCEPTED = "inferflux_spec_decode_num_accepted_tokens_total"
PER_POSITION = "inferflux_spec_decode_num_accepted_tokens_per_pos_total"


def speculating_server(speculative: dict[str, Any]) -> RunningServer:
    """The default model (4 sequences of 1024 tokens) drafting as ``speculative`` says."""
    model = {"name": MODEL_NAME, "context_length": 1024, "max_sequences": 4}
    settings = Settings.model_validate(
        {
            "server": {"port": free_port(), "log_level": "warning"},
            "models": [{**model, "speculative": speculative}],
        }
    )
    return start_server(settings)


@contextlib.contextmanager
def idle_after(served: RunningServer) -> Iterator[httpx.Client]:
    """A client of ``served``; once done, no request may still hold a sequence."""
    with httpx.Client(base_url=served.base_url, headers=served.auth_headers, timeout=120) as client:
        yield client
    assert served.wait_idle(), "a request was left holding a sequence"


@pytest.fixture(scope="module")
def served() -> Iterator[RunningServer]:
    """The default model with speculative decoding on (4 sequences)."""
    running = speculating_server({"method": "ngram", "num_tokens": 6})
    yield running
    running.stop()


@pytest.fixture
def http(served: RunningServer) -> Iterator[httpx.Client]:
    with idle_after(served) as client:
        yield client


def counters(http: httpx.Client) -> dict[str, float]:
    """The spec_decode counters of the model now (per position as ``name[position]``)."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(http.get("/metrics").text):
        for sample in family.samples:
            if sample.name.startswith("inferflux_spec_decode") and sample.name.endswith("_total"):
                if sample.labels.get("model_name") != MODEL_NAME:
                    continue
                position = sample.labels.get("position")
                key = f"{sample.name}[{position}]" if position is not None else sample.name
                found[key] = sample.value
    return found


def chat(http: httpx.Client, content: str, **fields: Any) -> dict[str, Any]:
    body = {
        "model": MODEL_NAME,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        **fields,
    }
    reply = http.post("/v1/chat/completions", json=body)
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


def text_of(reply: dict[str, Any]) -> str:
    return str(reply["choices"][0]["message"]["content"])


def grew(before: dict[str, float], after: dict[str, float], name: str) -> float:
    return after.get(name, 0.0) - before.get(name, 0.0)


@pytest.mark.parametrize("prompt", [REWRITE, STORY], ids=["rewrite", "story"])
def test_greedy_output_is_the_same_with_and_without_drafts(http: httpx.Client, prompt: str) -> None:
    plain = chat(http, prompt, speculative=False)
    drafted = chat(http, prompt)
    assert text_of(drafted) == text_of(plain)
    assert drafted["usage"] == plain["usage"]
    assert drafted["choices"][0]["finish_reason"] == plain["choices"][0]["finish_reason"]


def test_batched_sequences_that_draft_give_what_each_gives_alone(http: httpx.Client) -> None:
    prompts = [REWRITE, STORY, f"Copy this text exactly:\n\n{PARAGRAPH}", STORY]
    alone = [text_of(chat(http, p, speculative=False)) for p in prompts]
    with ThreadPoolExecutor(len(prompts)) as pool:
        together = list(pool.map(lambda p: text_of(chat(http, p)), prompts))
    assert together == alone


def test_a_rewriting_prompt_accepts_drafts(http: httpx.Client) -> None:
    before = counters(http)
    chat(http, REWRITE)
    after = counters(http)
    drafts, proposed = grew(before, after, DRAFTS), grew(before, after, DRAFT_TOKENS)
    accepted = grew(before, after, ACCEPTED)
    assert drafts >= 1 and proposed >= drafts
    assert 0 < accepted <= proposed
    assert grew(before, after, f"{PER_POSITION}[0]") >= 1
    per_position = sum(grew(before, after, k) for k in after if k.startswith(PER_POSITION))
    assert per_position == accepted


def streamed_and_plain(http: httpx.Client, prompt: str, max_tokens: int = 32) -> tuple[str, str]:
    """A greedy completion of ``prompt`` streamed (drafting), and in one piece without drafts."""
    body = {"model": MODEL_NAME, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
    plain = http.post("/v1/completions", json={**body, "speculative": False}).json()
    with http.stream("POST", "/v1/completions", json={**body, "stream": True}) as reply:
        lines = [line for line in reply.iter_lines() if line.startswith("data: {")]
    streamed = "".join(
        httpx.Response(200, content=line[6:]).json()["choices"][0]["text"] for line in lines
    )
    return streamed, str(plain["choices"][0]["text"])


def test_a_completion_streams_the_same_text_with_drafts(http: httpx.Client) -> None:
    streamed, plain = streamed_and_plain(http, REWRITE)
    assert streamed == plain


@pytest.mark.parametrize(
    "fields",
    [
        {"speculative": False},
        {"temperature": 0.8, "seed": 3},
        {"response_format": {"type": "json_object"}},
        {"logprobs": True},
        {"frequency_penalty": 0.5},
    ],
    ids=["opted-out", "sampled", "grammar", "logprobs", "penalty"],
)
def test_requests_that_opt_out_or_sample_with_state_get_no_drafts(
    http: httpx.Client, fields: dict[str, Any]
) -> None:
    before = counters(http)
    chat(http, REWRITE, **fields)
    assert grew(before, counters(http), DRAFT_TOKENS) == 0


def test_a_speculative_field_that_is_no_boolean_is_a_400(http: httpx.Client) -> None:
    body = {"model": MODEL_NAME, "messages": [{"role": "user", "content": "Hi"}]}
    reply = http.post("/v1/chat/completions", json={**body, "speculative": "yes"})
    assert reply.status_code == 400
    assert reply.json()["error"]["param"] == "speculative"


def test_a_model_that_does_not_draft_by_default_drafts_for_a_request_that_asks(
    server: RunningServer,
) -> None:
    with httpx.Client(base_url=server.base_url, headers=server.auth_headers, timeout=120) as http:
        before = counters(http)
        plain = chat(http, REWRITE, max_tokens=24)
        assert grew(before, counters(http), DRAFT_TOKENS) == 0
        asked = chat(http, REWRITE, max_tokens=24, speculative=True)
        assert grew(before, counters(http), ACCEPTED) > 0
    assert text_of(asked) == text_of(plain)


def greedy_request(rid: str, prompt: list[int], n: int, **fields: Any) -> GenerationRequest:
    """A greedy request for exactly ``n`` tokens."""
    greedy = SamplingParams(temperature=0.0)
    return GenerationRequest(prompt, n, greedy, request_id=rid, ignore_eos=True, **fields)


async def collect(engine: Engine, request: GenerationRequest, stop_after: int = 0) -> list[int]:
    """The request's tokens; with ``stop_after``, leave (cancel it) once that many came."""
    tokens: list[int] = []
    async for event in engine.submit(MODEL_NAME, request):
        assert event.error is None
        tokens.extend(event.token_ids)
        if stop_after and len(tokens) >= stop_after:
            break
    return tokens


def preemption_engine(speculative: dict[str, Any], **model: Any) -> Engine:
    """A loaded engine of the default model drafting as ``speculative`` says, with preemption."""
    settings = Settings(
        models=[ModelConfig(name=MODEL_NAME, speculative=speculative, **model)],
        scheduler=SchedulerConfig(options={"preemption": True}),
    )
    engine = Engine(settings)
    engine.load()
    return engine


def check_a_preempted_sequence_resumes_with_the_same_tokens(engine: Engine) -> None:
    """A drafting sequence preempted by a higher-priority request (one sequence at a time)
    gives what it gives alone without drafts; drafts were accepted."""
    model = engine.model(MODEL_NAME)
    low_prompt = model.tokenize_prompt(REWRITE)
    high_prompt = model.tokenize_prompt("The recipe for bread is")

    async def scenario() -> tuple[list[int], list[int]]:
        plain = await collect(engine, greedy_request("plain", low_prompt, 60, speculative=False))
        low = asyncio.create_task(collect(engine, greedy_request("low", low_prompt, 60)))
        while model.runner.active_sequences == 0:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        await collect(engine, greedy_request("high", high_prompt, 4, priority=5))
        return plain, await low

    plain, interrupted = asyncio.run(scenario())
    assert interrupted == plain
    names = {s.name: s.value for f in engine.metrics.registry.collect() for s in f.samples}
    assert names.get("inferflux_num_preemptions_total", 0) >= 1
    assert names.get(ACCEPTED, 0) > 0


def test_a_preempted_sequence_that_drafts_resumes_with_the_same_tokens() -> None:
    engine = preemption_engine({"method": "ngram"}, context_length=1024, max_sequences=1)
    try:
        check_a_preempted_sequence_resumes_with_the_same_tokens(engine)
    finally:
        engine.unload()
