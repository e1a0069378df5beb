"""The OpenAI API through the official SDK, against the real engine and model."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from inferflux_core.chat_template import ChatTemplate
from tests.conftest import MODEL_NAME, RunningServer

QUESTION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]


def test_models_list_names_the_default_model(openai_client: openai.OpenAI) -> None:
    models = openai_client.models.list()
    assert [m.id for m in models.data] == [MODEL_NAME]
    assert models.data[0].owned_by == "inferflux"


def test_model_retrieve_and_unknown_model(openai_client: openai.OpenAI) -> None:
    assert openai_client.models.retrieve(MODEL_NAME).id == MODEL_NAME
    with pytest.raises(openai.NotFoundError):
        openai_client.models.retrieve("no-such-model")


def test_chat_completion_answers_with_real_text(openai_client: openai.OpenAI) -> None:
    reply = openai_client.chat.completions.create(
        model=MODEL_NAME, messages=QUESTION, temperature=0, max_tokens=32
    )
    choice = reply.choices[0]
    assert re.search(r"[A-Za-z]{2,}", choice.message.content or ""), choice.message.content
    assert choice.message.role == "assistant"
    assert reply.usage is not None
    assert reply.usage.prompt_tokens > 10
    # How long the greedy answer is differs between CPUs: it ends, or fills max_tokens.
    if choice.finish_reason == "length":
        assert reply.usage.completion_tokens == 32
    else:
        assert choice.finish_reason == "stop" and 0 < reply.usage.completion_tokens <= 32
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert reply.id.startswith("chatcmpl-")


def test_streamed_chat_equals_non_streamed(openai_client: openai.OpenAI) -> None:
    whole = openai_client.chat.completions.create(
        model=MODEL_NAME, messages=QUESTION, temperature=0, max_tokens=40
    )
    chunks = list(
        openai_client.chat.completions.create(
            model=MODEL_NAME, messages=QUESTION, temperature=0, max_tokens=40, stream=True
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == whole.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])


def test_stream_include_usage_ends_with_usage_chunk(openai_client: openai.OpenAI) -> None:
    chunks = list(
        openai_client.chat.completions.create(
            model=MODEL_NAME,
            messages=QUESTION,
            temperature=0,
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
    )
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None and last.usage.completion_tokens == 8
    assert all(c.usage is None for c in chunks[:-1])


def test_completion_stops_at_max_tokens(openai_client: openai.OpenAI) -> None:
    reply = openai_client.completions.create(
        model=MODEL_NAME,
        prompt="The three primary colours are",
        max_tokens=8,
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 8
    assert reply.choices[0].text.strip()


def test_streamed_completion_equals_non_streamed(openai_client: openai.OpenAI) -> None:
    args = {"model": MODEL_NAME, "prompt": "Once upon a time", "max_tokens": 24, "temperature": 0}
    whole = openai_client.completions.create(**args)
    chunks = list(openai_client.completions.create(stream=True, **args))
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason


def test_completion_with_several_prompts_gives_one_choice_each(
    openai_client: openai.OpenAI,
) -> None:
    reply = openai_client.completions.create(
        model=MODEL_NAME, prompt=["Hello", "The sky is"], max_tokens=5, temperature=0
    )
    assert [c.index for c in reply.choices] == [0, 1]
    alone = openai_client.completions.create(
        model=MODEL_NAME, prompt="The sky is", max_tokens=5, temperature=0
    )
    assert reply.choices[1].text == alone.choices[0].text


def test_stop_string_ends_generation_and_is_not_returned(openai_client: openai.OpenAI) -> None:
    free = openai_client.completions.create(
        model=MODEL_NAME, prompt="Count: 1, 2, 3,", max_tokens=20, temperature=0
    )
    text = free.choices[0].text
    assert len(text) > 6
    stop = text[3:6]
    stopped = openai_client.completions.create(
        model=MODEL_NAME, prompt="Count: 1, 2, 3,", max_tokens=20, temperature=0, stop=[stop]
    )
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.choices[0].text == text[: text.index(stop)]


def test_seeded_sampling_is_reproducible(openai_client: openai.OpenAI) -> None:
    args = {
        "model": MODEL_NAME,
        "messages": [{"role": "user", "content": "Write a short poem about the sea."}],
        "temperature": 0.9,
        "top_p": 0.95,
        "max_tokens": 24,
    }
    first = openai_client.chat.completions.create(seed=1234, **args)
    again = openai_client.chat.completions.create(seed=1234, **args)
    assert first.choices[0].message.content == again.choices[0].message.content


@pytest.fixture
def http(server: RunningServer) -> Iterator[httpx.Client]:
    """A raw client on the test server; checks no request was left holding a sequence."""
    with httpx.Client(base_url=server.base_url, headers=server.auth_headers, timeout=60) as client:
        yield client
    assert server.wait_idle(), "a request was left holding a sequence"


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.mark.parametrize(
    "extra",
    [{}, {"logprobs": True}, {"tools": [WEATHER_TOOL], "tool_choice": "required"}],
    ids=["plain", "logprobs", "tool_call"],
)
def test_chat_message_has_a_null_refusal(http: httpx.Client, extra: dict[str, Any]) -> None:
    body = {"model": MODEL_NAME, "messages": QUESTION, "max_tokens": 24, "temperature": 0}
    response = http.post("/v1/chat/completions", json={**body, **extra})
    assert response.status_code == 200, response.text
    [choice] = response.json()["choices"]
    assert "refusal" in choice["message"] and choice["message"]["refusal"] is None
    if "logprobs" in extra:
        assert set(choice["logprobs"]) == {"content", "refusal"}
        assert choice["logprobs"]["refusal"] is None and choice["logprobs"]["content"]
    if "tools" in extra:
        assert choice["message"]["tool_calls"] and choice["message"]["content"] is None


def test_sdk_reads_refusal_as_sent_not_defaulted(openai_client: openai.OpenAI) -> None:
    reply = openai_client.chat.completions.create(
        model=MODEL_NAME, messages=QUESTION, temperature=0, max_tokens=4, logprobs=True
    )
    message = reply.choices[0].message
    assert "refusal" in message.model_fields_set and message.refusal is None
    logprobs = reply.choices[0].logprobs
    assert logprobs is not None and "refusal" in logprobs.model_fields_set


GEMMA_2 = Path(__file__).resolve().parents[1] / "data" / "templates" / "google-gemma-2-2b-it.jinja"


def test_a_template_refusing_the_messages_is_a_400_naming_its_reason(
    server: RunningServer, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Gemma 2's template raises on a system message; the client gets the template's words."""
    model = server.engine.model(MODEL_NAME)
    monkeypatch.setattr(model, "template", ChatTemplate(GEMMA_2.read_text(encoding="utf-8")))
    body = {"model": MODEL_NAME, "messages": QUESTION, "max_tokens": 2}
    response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "chat_template_error" and error["type"] == "invalid_request_error"
    assert "System role not supported" in error["message"]
    without_system = {**body, "messages": QUESTION[1:]}
    assert http.post("/v1/chat/completions", json=without_system).status_code == 200
