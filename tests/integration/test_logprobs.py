"""Token logprobs through the OpenAI SDK: chat's shape, the legacy completions shape, streams,
and how they follow stop strings."""

from __future__ import annotations

import math

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionTokenLogprob

from tests.conftest import MODEL_NAME, RunningServer

MESSAGES = [{"role": "user", "content": "Name three colours."}]
PROMPT = "The three primary colours are"


@pytest.fixture
def http(server: RunningServer):  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=server.base_url, headers=server.auth_headers, timeout=60) as client:
        yield client
    assert server.wait_idle(), "a request was left holding a sequence"


def check_token_logprob(entry: ChatCompletionTokenLogprob, n_top: int, greedy: bool) -> None:
    """One entry of ``logprobs.content`` is what OpenAI documents."""
    assert entry.logprob <= 0.0 and math.isfinite(entry.logprob)
    assert entry.bytes is not None
    assert bytes(entry.bytes).decode("utf-8", errors="replace") == entry.token
    tops = entry.top_logprobs
    assert len(tops) == n_top
    assert [t.logprob for t in tops] == sorted((t.logprob for t in tops), reverse=True)
    assert all(t.logprob <= 0.0 and bytes(t.bytes or []).decode() == t.token for t in tops)
    if greedy:
        assert tops[0].token == entry.token
        assert tops[0].logprob == entry.logprob


def test_chat_logprobs_have_openais_shape(openai_client: openai.OpenAI) -> None:
    reply = openai_client.chat.completions.create(
        model=MODEL_NAME,
        messages=MESSAGES,
        max_tokens=12,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
    )
    choice = reply.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content
    assert choice.logprobs.refusal is None
    for entry in choice.logprobs.content:
        check_token_logprob(entry, 3, greedy=True)
    assert "".join(e.token for e in choice.logprobs.content) == choice.message.content
    assert reply.usage is not None
    assert len(choice.logprobs.content) == reply.usage.completion_tokens


def test_chat_without_logprobs_reports_none(openai_client: openai.OpenAI) -> None:
    reply = openai_client.chat.completions.create(
        model=MODEL_NAME, messages=MESSAGES, max_tokens=3, temperature=0
    )
    assert reply.choices[0].logprobs is None


def test_sampled_token_logprob_without_alternatives(openai_client: openai.OpenAI) -> None:
    reply = openai_client.chat.completions.create(
        model=MODEL_NAME,
        messages=MESSAGES,
        max_tokens=6,
        temperature=1.0,
        seed=5,
        logprobs=True,
    )
    content = reply.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content
    for entry in content:
        check_token_logprob(entry, 0, greedy=False)


def test_streamed_chunks_carry_their_tokens_logprobs(openai_client: openai.OpenAI) -> None:
    options = {
        "model": MODEL_NAME,
        "messages": MESSAGES,
        "max_tokens": 10,
        "temperature": 0,
        "logprobs": True,
        "top_logprobs": 2,
    }
    whole = openai_client.chat.completions.create(**options)  # type: ignore[call-overload]
    chunks = [c for c in openai_client.chat.completions.create(stream=True, **options) if c.choices]
    streamed: list[ChatCompletionTokenLogprob] = []
    for chunk in chunks:
        choice = chunk.choices[0]
        if choice.delta.content:
            assert choice.logprobs is not None and choice.logprobs.content
            assert "".join(e.token for e in choice.logprobs.content) == choice.delta.content
            streamed.extend(choice.logprobs.content)
    expected = whole.choices[0].logprobs.content  # type: ignore[union-attr]
    assert [(e.token, e.logprob) for e in streamed] == [(e.token, e.logprob) for e in expected]


@pytest.mark.parametrize(
    "fields",
    [
        {"top_logprobs": 2},
        {"logprobs": True, "top_logprobs": 21},
        {"logprobs": True, "top_logprobs": -1},
    ],
)
def test_bad_top_logprobs_is_400(http: httpx.Client, fields: dict[str, object]) -> None:
    body = {"model": MODEL_NAME, "messages": MESSAGES, "max_tokens": 1, **fields}
    reply = http.post("/v1/chat/completions", json=body)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["param"] == "top_logprobs"


def check_completion_logprobs(text: str, logprobs: object, n_top: int) -> None:
    """The legacy object: parallel lists, offsets into the text, top dicts with the token."""
    tokens = logprobs.tokens  # type: ignore[attr-defined]
    values = logprobs.token_logprobs  # type: ignore[attr-defined]
    tops = logprobs.top_logprobs  # type: ignore[attr-defined]
    offsets = logprobs.text_offset  # type: ignore[attr-defined]
    assert len(tokens) == len(values) == len(tops) == len(offsets) > 0
    for token, value, top, offset in zip(tokens, values, tops, offsets, strict=True):
        assert text[offset : offset + len(token)] == token
        if value is None:  # an echoed prompt token
            assert top is None
            continue
        assert value <= 0.0
        assert top[token] == value
        assert n_top <= len(top) <= n_top + 1
        assert max(top.values()) >= value


def test_completion_logprobs_have_the_legacy_shape(openai_client: openai.OpenAI) -> None:
    reply = openai_client.completions.create(
        model=MODEL_NAME, prompt=PROMPT, max_tokens=8, temperature=0, logprobs=3
    )
    choice = reply.choices[0]
    assert choice.logprobs is not None
    check_completion_logprobs(choice.text, choice.logprobs, 3)
    assert "".join(choice.logprobs.tokens or []) == choice.text
    # greedy: the sampled token is the most likely one
    pairs = zip(choice.logprobs.tokens or [], choice.logprobs.top_logprobs or [], strict=True)
    for token, top in pairs:
        assert max(top, key=top.__getitem__) == token


def test_completion_logprobs_with_echo_list_the_prompt(openai_client: openai.OpenAI) -> None:
    plain = openai_client.completions.create(
        model=MODEL_NAME, prompt=PROMPT, max_tokens=4, temperature=0, logprobs=0
    )
    echoed = openai_client.completions.create(
        model=MODEL_NAME, prompt=PROMPT, max_tokens=4, temperature=0, logprobs=0, echo=True
    )
    choice = echoed.choices[0]
    assert choice.text == PROMPT + plain.choices[0].text
    check_completion_logprobs(choice.text, choice.logprobs, 0)
    values = choice.logprobs.token_logprobs  # type: ignore[union-attr]
    n_prompt = echoed.usage.prompt_tokens  # type: ignore[union-attr]
    assert values[:n_prompt] == [None] * n_prompt
    assert values[n_prompt:] == plain.choices[0].logprobs.token_logprobs  # type: ignore[union-attr]


def test_streamed_completion_logprobs_continue_offsets(openai_client: openai.OpenAI) -> None:
    options = {"model": MODEL_NAME, "prompt": PROMPT, "max_tokens": 8, "temperature": 0}
    whole = openai_client.completions.create(logprobs=1, **options)  # type: ignore[call-overload]
    tokens: list[str] = []
    offsets: list[int] = []
    for chunk in openai_client.completions.create(logprobs=1, stream=True, **options):
        if chunk.choices and chunk.choices[0].logprobs:
            tokens.extend(chunk.choices[0].logprobs.tokens or [])
            offsets.extend(chunk.choices[0].logprobs.text_offset or [])
    assert tokens == whole.choices[0].logprobs.tokens  # type: ignore[union-attr]
    assert offsets == whole.choices[0].logprobs.text_offset  # type: ignore[union-attr]


def test_completion_logprobs_above_five_is_400(http: httpx.Client) -> None:
    body = {"model": MODEL_NAME, "prompt": PROMPT, "max_tokens": 1, "logprobs": 6}
    reply = http.post("/v1/completions", json=body)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["param"] == "logprobs"


@pytest.mark.parametrize("stream", [False, True])
def test_logprobs_stop_at_a_stop_string_across_tokens(
    openai_client: openai.OpenAI, stream: bool
) -> None:
    """A stop string spanning two tokens: the token that starts it before the cut is reported
    (its text was partly output), the token after it never is."""
    options = {"model": MODEL_NAME, "prompt": PROMPT, "max_tokens": 16, "temperature": 0}
    free = openai_client.completions.create(logprobs=0, **options)  # type: ignore[call-overload]
    tokens = free.choices[0].logprobs.tokens  # type: ignore[union-attr]
    text = free.choices[0].text
    k = next(
        i
        for i in range(1, len(tokens) - 1)
        if tokens[i]
        and tokens[i + 1]
        and len(tokens[i]) > 1
        and (tokens[i][-1] + tokens[i + 1][0]) not in "".join(tokens[: i + 1])
    )
    stop = tokens[k][-1] + tokens[k + 1][0]
    cut = len("".join(tokens[: k + 1])) - 1
    if stream:
        pieces, reported = [], []
        for chunk in openai_client.completions.create(
            logprobs=0, stop=stop, stream=True, **options
        ):
            if chunk.choices:
                pieces.append(chunk.choices[0].text)
                if chunk.choices[0].logprobs:
                    reported.extend(chunk.choices[0].logprobs.tokens or [])
        out = "".join(pieces)
    else:
        stopped = openai_client.completions.create(logprobs=0, stop=stop, **options)  # type: ignore[call-overload]
        out = stopped.choices[0].text
        reported = stopped.choices[0].logprobs.tokens  # type: ignore[union-attr]
    assert out == text[:cut]
    assert reported == tokens[: k + 1]
