"""OpenAI sampling fields beyond the basics: ``logit_bias``, ``echo``, ``user``."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.conftest import MODEL_NAME, RunningServer

PROMPT = "The capital of France is"


@pytest.fixture
def http(server: RunningServer):  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=server.base_url, headers=server.auth_headers, timeout=60) as client:
        yield client
    assert server.wait_idle(), "a request was left holding a sequence"


def token_ids(http: httpx.Client, text: str) -> list[int]:
    body = {"model": MODEL_NAME, "prompt": text, "add_special_tokens": False}
    return list(http.post("/tokenize", json=body).json()["tokens"])


def first_token(openai_client: openai.OpenAI, **fields: object) -> str:
    reply = openai_client.completions.create(
        model=MODEL_NAME, prompt=PROMPT, max_tokens=1, temperature=0, **fields
    )
    return reply.choices[0].text


def test_logit_bias_bans_and_forces_tokens(
    openai_client: openai.OpenAI, http: httpx.Client
) -> None:
    greedy = first_token(openai_client)
    banned = token_ids(http, greedy)[0]
    assert first_token(openai_client, logit_bias={str(banned): -100}) != greedy
    forced = token_ids(http, " banana")[0]
    assert (
        first_token(openai_client, logit_bias={str(forced): 100})
        == http.post("/detokenize", json={"model": MODEL_NAME, "tokens": [forced]}).json()["prompt"]
    )


def test_chat_takes_logit_bias_too(openai_client: openai.OpenAI, http: httpx.Client) -> None:
    forced = token_ids(http, "Banana")[0]
    reply = openai_client.chat.completions.create(
        model=MODEL_NAME,
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=1,
        temperature=0,
        logit_bias={str(forced): 100},
    )
    assert (
        reply.choices[0].message.content == "Banana"[: len(reply.choices[0].message.content or "")]
    )
    assert reply.choices[0].message.content


@pytest.mark.parametrize(
    "bias", [{"abc": 1}, {"5": 101}, {"5": -1000}, {"10000000": 1}, {"-1": 1}, {"5": "x"}]
)
def test_bad_logit_bias_is_400(http: httpx.Client, bias: dict[str, object]) -> None:
    body = {"model": MODEL_NAME, "prompt": PROMPT, "max_tokens": 1, "logit_bias": bias}
    reply = http.post("/v1/completions", json=body)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["param"].startswith("logit_bias")


def test_echo_prepends_the_prompt(openai_client: openai.OpenAI) -> None:
    plain = openai_client.completions.create(
        model=MODEL_NAME, prompt=PROMPT, max_tokens=4, temperature=0
    )
    echoed = openai_client.completions.create(
        model=MODEL_NAME, prompt=PROMPT, max_tokens=4, temperature=0, echo=True
    )
    assert echoed.choices[0].text == PROMPT + plain.choices[0].text


def test_echo_of_token_ids_and_of_a_stream(
    openai_client: openai.OpenAI, http: httpx.Client
) -> None:
    tokens = token_ids(http, PROMPT)
    reply = openai_client.completions.create(
        model=MODEL_NAME, prompt=tokens, max_tokens=2, temperature=0, echo=True
    )
    assert reply.choices[0].text.startswith(PROMPT)
    stream = openai_client.completions.create(
        model=MODEL_NAME, prompt=PROMPT, max_tokens=3, temperature=0, echo=True, stream=True
    )
    chunks = [c.choices[0].text for c in stream if c.choices]
    assert chunks[0] == PROMPT
    assert len(chunks) > 1


def test_user_is_accepted(openai_client: openai.OpenAI) -> None:
    reply = openai_client.chat.completions.create(
        model=MODEL_NAME, messages=[{"role": "user", "content": "Hi"}], max_tokens=2, user="u-1"
    )
    assert reply.choices[0].message.content is not None
