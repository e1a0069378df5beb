"""Several choices per request: ``n`` (one prefill for all), ``best_of``, seeds; ``suffix``;
and the sampling fields the OpenAI SDK sends."""

from __future__ import annotations

import uuid

import httpx
import openai
import pytest

from tests.conftest import MODEL_NAME, RunningServer

MESSAGES = [{"role": "user", "content": "Write one sentence about a dog."}]
PROMPT = "Once upon a time, in a small village,"


@pytest.fixture
def http(server: RunningServer):  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=server.base_url, headers=server.auth_headers, timeout=60) as client:
        yield client
    assert server.wait_idle(), "a request was left holding a sequence"


def counted(server: RunningServer, name: str, **labels: str) -> float:
    value = server.engine.metrics.registry.get_sample_value(
        name, {"model_name": MODEL_NAME, "engine": "0", **labels}
    )
    return value or 0.0


def prompt_tokens(server: RunningServer) -> float:
    return counted(server, "inferflux_prompt_tokens_total", model=MODEL_NAME)


def cached_tokens(server: RunningServer) -> float:
    return counted(server, "inferflux_prefix_cache_hits_total")


def test_chat_n_gives_n_choices(openai_client: openai.OpenAI) -> None:
    options = {"model": MODEL_NAME, "messages": MESSAGES, "max_tokens": 8, "temperature": 1.0}
    one = openai_client.chat.completions.create(seed=3, **options)  # type: ignore[call-overload]
    reply = openai_client.chat.completions.create(n=3, seed=3, **options)  # type: ignore[call-overload]
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert all(c.message.content for c in reply.choices)
    # the first choice is the request's own seed, the others derived ones
    assert reply.choices[0].message.content == one.choices[0].message.content
    assert reply.usage is not None and one.usage is not None
    assert reply.usage.prompt_tokens == one.usage.prompt_tokens  # counted once
    if all(c.finish_reason == "length" for c in reply.choices):
        assert reply.usage.completion_tokens == 3 * 8
    assert reply.usage.completion_tokens > one.usage.completion_tokens


def test_n_prefills_the_prompt_once(openai_client: openai.OpenAI, server: RunningServer) -> None:
    unique = [{"role": "user", "content": f"Tell me about the number {uuid.uuid4().int}."}]
    before, cached_before = prompt_tokens(server), cached_tokens(server)
    reply = openai_client.chat.completions.create(
        model=MODEL_NAME, messages=unique, max_tokens=4, temperature=1.0, n=4, seed=1
    )
    assert reply.usage is not None
    n_prompt = reply.usage.prompt_tokens
    assert n_prompt > 20
    # the prompt is processed once; the other three choices copy it from the first's KV,
    # all but its last token, which each decodes to sample a first token of its own (the
    # first may have found a cached prefix of its own: the chat template's start)
    assert prompt_tokens(server) - before == n_prompt
    copied = 3 * (n_prompt - 1)
    assert copied <= cached_tokens(server) - cached_before < copied + n_prompt


def test_seeded_choices_differ_and_are_reproducible(openai_client: openai.OpenAI) -> None:
    def texts() -> list[str]:
        reply = openai_client.completions.create(
            model=MODEL_NAME, prompt=PROMPT, max_tokens=12, temperature=1.0, n=3, seed=42
        )
        return [c.text for c in reply.choices]

    first = texts()
    assert texts() == first
    assert len(set(first)) > 1


def test_greedy_choices_are_the_same(openai_client: openai.OpenAI) -> None:
    reply = openai_client.completions.create(
        model=MODEL_NAME, prompt=PROMPT, max_tokens=8, temperature=0, n=3
    )
    assert len({c.text for c in reply.choices}) == 1


def test_chat_n_streams_every_choice(openai_client: openai.OpenAI) -> None:
    options = {"model": MODEL_NAME, "messages": MESSAGES, "max_tokens": 6, "seed": 9}
    whole = openai_client.chat.completions.create(n=3, **options)  # type: ignore[call-overload]
    texts = ["", "", ""]
    roles, finishes = set(), {}
    stream = openai_client.chat.completions.create(
        n=3, stream=True, stream_options={"include_usage": True}, **options
    )
    usage = None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            if choice.delta.role:
                roles.add(choice.index)
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert roles == {0, 1, 2} and set(finishes) == {0, 1, 2}
    assert texts == [c.message.content for c in whole.choices]
    assert usage is not None and whole.usage is not None
    assert usage.prompt_tokens == whole.usage.prompt_tokens
    assert usage.completion_tokens == whole.usage.completion_tokens


def test_completion_choices_are_numbered_prompt_by_prompt(openai_client: openai.OpenAI) -> None:
    prompts = ["The sky is", "Two plus two is"]
    reply = openai_client.completions.create(
        model=MODEL_NAME, prompt=prompts, max_tokens=4, temperature=0, n=2, echo=True
    )
    assert [c.index for c in reply.choices] == [0, 1, 2, 3]
    for choice in reply.choices:
        assert choice.text.startswith(prompts[choice.index // 2])
    single = [
        openai_client.completions.create(model=MODEL_NAME, prompt=p, max_tokens=4, temperature=0)
        for p in prompts
    ]
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == sum(s.usage.prompt_tokens for s in single)  # type: ignore[union-attr]


def test_completion_n_streams_every_choice(openai_client: openai.OpenAI) -> None:
    options = {"model": MODEL_NAME, "prompt": ["A", "B"], "max_tokens": 5, "seed": 4}
    whole = openai_client.completions.create(n=2, **options)  # type: ignore[call-overload]
    texts = [""] * 4
    for chunk in openai_client.completions.create(n=2, stream=True, **options):
        for choice in chunk.choices:
            texts[choice.index] += choice.text
    assert texts == [c.text for c in whole.choices]


def test_best_of_returns_the_candidates_with_the_highest_logprob_sum(
    openai_client: openai.OpenAI,
) -> None:
    options = {
        "model": MODEL_NAME,
        "prompt": PROMPT,
        "max_tokens": 10,
        "temperature": 1.2,
        "seed": 17,
        "logprobs": 0,
    }
    every = openai_client.completions.create(n=4, **options)  # type: ignore[call-overload]
    scored = sorted(
        ((sum(c.logprobs.token_logprobs), c.text) for c in every.choices),  # type: ignore[union-attr, arg-type]
        reverse=True,
    )
    assert len({text for _, text in scored}) > 1
    best = openai_client.completions.create(best_of=4, n=2, **options)  # type: ignore[call-overload]
    assert [c.text for c in best.choices] == [text for _, text in scored[:2]]
    assert [c.index for c in best.choices] == [0, 1]
    # without logprobs asked for, the same one wins and none are reported
    plain = {k: v for k, v in options.items() if k != "logprobs"}
    one = openai_client.completions.create(best_of=4, **plain)  # type: ignore[call-overload]
    assert one.choices[0].text == scored[0][1]
    assert one.choices[0].logprobs is None


@pytest.mark.parametrize(
    "fields",
    [{"best_of": 3, "stream": True}, {"best_of": 1, "n": 2}, {"best_of": 21}, {"best_of": 0}],
)
def test_bad_best_of_is_400(http: httpx.Client, fields: dict[str, object]) -> None:
    body = {"model": MODEL_NAME, "prompt": PROMPT, "max_tokens": 2, **fields}
    reply = http.post("/v1/completions", json=body)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["param"] == "best_of"


def test_suffix_needs_fill_in_the_middle_tokens(http: httpx.Client) -> None:
    body = {"model": MODEL_NAME, "prompt": "def add(a, b):\n", "suffix": "\n    return c"}
    reply = http.post("/v1/completions", json=body)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["param"] == "suffix" and error["code"] == "unsupported"
    assert "fill-in-the-middle" in error["message"]


def test_n_above_the_limit_is_400(http: httpx.Client) -> None:
    body = {"model": MODEL_NAME, "messages": MESSAGES, "max_tokens": 1, "n": 129}
    reply = http.post("/v1/chat/completions", json=body)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["param"] == "n"


def test_max_completion_tokens_caps_the_output(openai_client: openai.OpenAI) -> None:
    reply = openai_client.chat.completions.create(
        model=MODEL_NAME, messages=MESSAGES, max_completion_tokens=3, temperature=0
    )
    assert reply.usage is not None and reply.usage.completion_tokens == 3
    assert reply.choices[0].finish_reason == "length"


def test_stop_list_ends_at_the_first_match(openai_client: openai.OpenAI) -> None:
    options = {"model": MODEL_NAME, "prompt": "Count: 1, 2, 3,", "max_tokens": 20}
    free = openai_client.completions.create(temperature=0, **options)  # type: ignore[call-overload]
    text = free.choices[0].text
    stops = [text[8:10], text[4:6], "never-produced"]
    reply = openai_client.completions.create(temperature=0, stop=stops, **options)  # type: ignore[call-overload]
    first = min(text.index(s) for s in stops[:2])
    assert reply.choices[0].text == text[:first]
    assert reply.choices[0].finish_reason == "stop"


def test_frequency_penalty_changes_repetitive_output(openai_client: openai.OpenAI) -> None:
    options = {"model": MODEL_NAME, "prompt": "Count: 1, 2, 3,", "max_tokens": 24}
    plain = openai_client.completions.create(temperature=0, **options)  # type: ignore[call-overload]
    penalised = openai_client.completions.create(
        temperature=0,
        frequency_penalty=2.0,
        presence_penalty=2.0,
        **options,  # type: ignore[arg-type]
    )
    assert penalised.choices[0].text != plain.choices[0].text
