"""The OpenAI API through the official SDK, against the real engine and model."""

from __future__ import annotations

import re

import openai
import pytest

from tests.conftest import MODEL_NAME

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
