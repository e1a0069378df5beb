"""Anthropic's Messages API on a real server, through the official ``anthropic`` SDK.

What the model says differs between CPUs, so nothing here asserts it: a streamed answer is
compared with the whole one (greedy), a stop sequence is taken from the model's own answer.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import jsonschema
import pydantic
import pytest

from inferflux_core.auth.policy_admin import KeyCreate, PolicyAdmin
from inferflux_core.contracts import RateLimits
from tests.conftest import MODEL_NAME, TEST_BODY_LIMIT, RunningServer

GREEDY = {"temperature": 0}
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
STORY = [{"role": "user", "content": "Tell me a short story about a cat."}]
SYSTEM = "You are a helpful assistant."
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 40}},
    "required": ["city"],
}
WEATHER = {
    "name": "get_weather",
    "description": "Get the current weather in a city",
    "input_schema": WEATHER_SCHEMA,
}
FORCED = {"type": "tool", "name": "get_weather"}
STOP_REASONS = {"end_turn", "max_tokens", "stop_sequence", "tool_use"}


def client_for(server: RunningServer, key: str | None = None) -> anthropic.Anthropic:
    """The official SDK pointed at ``server`` (its admin key unless ``key``)."""
    return anthropic.Anthropic(
        base_url=server.base_url, api_key=key or server.api_key, max_retries=0, timeout=120
    )


@pytest.fixture(scope="module")
def claude(server: RunningServer) -> Iterator[anthropic.Anthropic]:
    """The SDK's client; afterwards every request has released its sequence."""
    with client_for(server) as client:
        yield client
    assert server.wait_idle(), "a request was left holding a sequence"


@pytest.fixture
def http(server: RunningServer) -> Iterator[httpx.Client]:
    """A plain HTTP client of the server, without credentials."""
    with httpx.Client(base_url=server.base_url, timeout=120) as client:
        yield client


def _text(message: anthropic.types.Message) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


def _anthropic_error(response: httpx.Response, status: int, kind: str) -> str:
    """The body is Anthropic's error shape with ``kind``; its message."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error" and set(body) == {"type", "error", "request_id"}, body
    assert body["error"]["type"] == kind, body
    return str(body["error"]["message"])


# -- whole and streamed answers --------------------------------------------------------------


def test_a_whole_message_has_anthropics_shape(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(
        model=MODEL_NAME, max_tokens=16, system=SYSTEM, messages=QUESTION, extra_body=GREEDY
    )
    assert message.id.startswith("msg_") and message.type == "message"
    assert message.role == "assistant" and message.model == MODEL_NAME
    assert [block.type for block in message.content] == ["text"]
    assert message.stop_reason in STOP_REASONS and message.stop_sequence is None
    assert message.usage.input_tokens > 0 and 0 < message.usage.output_tokens <= 16


def test_streamed_answers_match_the_whole_greedy_one(claude: anthropic.Anthropic) -> None:
    kwargs: dict[str, Any] = {
        "model": MODEL_NAME,
        "max_tokens": 24,
        "system": SYSTEM,
        "messages": STORY,
        "extra_body": GREEDY,
    }
    whole = claude.messages.create(**kwargs)
    with claude.messages.stream(**kwargs) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(pieces) == _text(final) == _text(whole)
    assert final.stop_reason == whole.stop_reason
    assert final.usage.output_tokens == whole.usage.output_tokens
    assert final.usage.input_tokens == whole.usage.input_tokens
    events = list(claude.messages.create(**kwargs, stream=True))
    kinds = [event.type for event in events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds[1:-2] == ["content_block_start"] + ["content_block_delta"] * (len(kinds) - 5) + [
        "content_block_stop"
    ]
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta")
    assert text == _text(whole)
    assert events[-2].delta.stop_reason == whole.stop_reason
    assert events[0].message.usage.input_tokens == whole.usage.input_tokens


def test_the_raw_stream_is_anthropics_event_sequence(
    server: RunningServer, http: httpx.Client
) -> None:
    body = {"model": MODEL_NAME, "max_tokens": 8, "messages": QUESTION, "stream": True}
    with http.stream("POST", "/v1/messages", json=body, headers=server.auth_headers) as r:
        assert r.status_code == 200 and r.headers["request-id"]
        raw = r.read().decode()
    events = [e for e in raw.split("\n\n") if e.strip()]
    names = [e.split("\n")[0] for e in events]
    assert names[:2] == ["event: message_start", "event: ping"], raw
    assert names[-1] == "event: message_stop" and "[DONE]" not in raw
    for event in events:
        name, data = event.split("\n")
        assert json.loads(data.removeprefix("data: "))["type"] == name.removeprefix("event: ")


def test_the_2x_client_sends_no_temperature_and_gets_an_answer(
    claude: anthropic.Anthropic,
) -> None:
    assert "temperature" not in inspect.signature(claude.messages.create).parameters
    message = claude.messages.create(model=MODEL_NAME, max_tokens=4, messages=QUESTION)
    assert message.stop_reason in STOP_REASONS and message.usage.output_tokens > 0


def test_max_tokens_ends_with_stop_reason_max_tokens(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(
        model=MODEL_NAME, max_tokens=3, messages=STORY, extra_body=GREEDY
    )
    assert (message.stop_reason, message.usage.output_tokens) == ("max_tokens", 3)


def test_a_stop_sequence_from_the_answer_ends_it_there(claude: anthropic.Anthropic) -> None:
    kwargs: dict[str, Any] = {
        "model": MODEL_NAME,
        "max_tokens": 24,
        "messages": STORY,
        "extra_body": GREEDY,
    }
    whole = _text(claude.messages.create(**kwargs))
    words = whole.split()
    assert len(words) >= 4, whole
    stop = words[len(words) // 2]
    cut = claude.messages.create(**kwargs, stop_sequences=[stop, "never-said-xyz"])
    assert (cut.stop_reason, cut.stop_sequence) == ("stop_sequence", stop)
    assert _text(cut) == whole[: whole.index(stop)]
    with claude.messages.stream(**kwargs, stop_sequences=[stop]) as stream:
        final = stream.get_final_message()
    assert (final.stop_reason, final.stop_sequence, _text(final)) == (
        "stop_sequence",
        stop,
        _text(cut),
    )


# -- tools -----------------------------------------------------------------------------------


def _forced(claude: anthropic.Anthropic, **extra: Any) -> anthropic.types.Message:
    return claude.messages.create(
        model=MODEL_NAME,
        max_tokens=48,
        system=SYSTEM,
        messages=[{"role": "user", "content": "What is the weather like in Paris?"}],
        tools=[WEATHER],
        tool_choice=FORCED,
        extra_body=GREEDY,
        **extra,
    )


def test_a_forced_tool_use_has_input_matching_its_schema(claude: anthropic.Anthropic) -> None:
    message = _forced(claude)
    assert message.stop_reason == "tool_use"
    uses = [block for block in message.content if block.type == "tool_use"]
    assert len(uses) == 1 and uses[0].name == "get_weather" and uses[0].id
    jsonschema.validate(uses[0].input, WEATHER_SCHEMA)
    with claude.messages.stream(
        model=MODEL_NAME,
        max_tokens=48,
        system=SYSTEM,
        messages=[{"role": "user", "content": "What is the weather like in Paris?"}],
        tools=[WEATHER],
        tool_choice=FORCED,
        extra_body=GREEDY,
    ) as stream:
        streamed = stream.get_final_message()
    streamed_uses = [block for block in streamed.content if block.type == "tool_use"]
    assert [(u.name, u.input) for u in streamed_uses] == [(uses[0].name, uses[0].input)]
    assert streamed.stop_reason == "tool_use"


def test_the_tool_result_turn_is_answered(claude: anthropic.Anthropic) -> None:
    first = _forced(claude)
    use = next(block for block in first.content if block.type == "tool_use")
    for is_error in (False, True):
        reply = claude.messages.create(
            model=MODEL_NAME,
            max_tokens=16,
            system=SYSTEM,
            tools=[WEATHER],
            messages=[
                {"role": "user", "content": "What is the weather like in Paris?"},
                {"role": "assistant", "content": first.content},
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": use.id,
                            "content": [{"type": "text", "text": "Sunny, 22 degrees"}],
                            "is_error": is_error,
                        },
                        {"type": "text", "text": "Answer in one sentence."},
                    ],
                },
            ],
            extra_body=GREEDY,
        )
        assert reply.stop_reason in STOP_REASONS and reply.usage.output_tokens > 0
        assert reply.usage.input_tokens > first.usage.input_tokens


def test_count_tokens_equals_the_answers_input_tokens(claude: anthropic.Anthropic) -> None:
    conversation: dict[str, Any] = {
        "model": MODEL_NAME,
        "system": SYSTEM,
        "messages": [{"role": "user", "content": "What is the weather like in Paris?"}],
        "tools": [WEATHER],
        "tool_choice": FORCED,
    }
    counted = claude.messages.count_tokens(**conversation).input_tokens
    usage = _forced(claude).usage
    assert counted == usage.input_tokens + (usage.cache_read_input_tokens or 0)
    plain = claude.messages.count_tokens(model=MODEL_NAME, messages=QUESTION).input_tokens
    assert 0 < plain < counted


# -- errors, in Anthropic's shape ------------------------------------------------------------


def test_an_unknown_model_is_the_sdks_not_found_error(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        claude.messages.create(model="no-such-model", max_tokens=4, messages=QUESTION)
    assert caught.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.NotFoundError):
        claude.messages.count_tokens(model="no-such-model", messages=QUESTION)


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"bogus_field": 1}, "bogus_field"),
        ({"thinking": {"type": "enabled", "budget_tokens": 2048}}, "thinking"),
        ({"mcp_servers": [{"type": "url", "url": "http://x", "name": "x"}]}, "mcp_servers"),
        ({"container": "c"}, "container"),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools.0.type"),
        ({"tool_choice": {"type": "tool", "name": "nope"}, "tools": [WEATHER]}, "tool_choice"),
        ({"temperature": 1.5}, "temperature"),
        ({"top_k": -1}, "top_k"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 1 << 40}, "max_tokens"),
        ({"stop_sequences": ["x"] * 100}, "stop_sequences"),
        ({"metadata": {"user_id": "u", "other": 1}}, "metadata.other"),
        ({"stream": "yes"}, "stream"),
    ],
)
def test_a_field_we_cannot_honour_is_a_bad_request_naming_it(
    claude: anthropic.Anthropic, extra: dict[str, Any], named: str
) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        claude.messages.create(model=MODEL_NAME, max_tokens=4, messages=QUESTION, extra_body=extra)
    error = caught.value.body["error"]  # type: ignore[index]
    assert error["type"] == "invalid_request_error" and named in error["message"], error


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            [{"type": "image", "source": {"type": "url", "url": "http://x/y.png"}}],
            "image input is not supported",
        ),
        (
            [
                {
                    "type": "tool_result",
                    "tool_use_id": "t",
                    "content": [{"type": "image", "source": {}}],
                }
            ],
            "image input is not supported",
        ),
        ([{"type": "tool_use", "id": "t", "name": "f", "input": {}}], "messages.0.content.0"),
        ([{"type": "text"}], "messages.0.content.0.text"),
    ],
)
def test_a_block_we_cannot_take_is_a_bad_request(
    claude: anthropic.Anthropic, content: list[dict[str, Any]], expected: str
) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        claude.messages.create(
            model=MODEL_NAME, max_tokens=4, messages=[{"role": "user", "content": content}]
        )
    assert expected in caught.value.body["error"]["message"]  # type: ignore[index]


PREFILL = "The capital of France is"


def _continued_prompt(http: httpx.Client, messages: list[dict[str, Any]]) -> str:
    """The prompt that continues ``messages``' final assistant text, built independently of
    the server's prefill code: the template's rendering without a generation prompt (from
    ``/tokenize`` and ``/detokenize``), cut right after the final text."""
    body = {"model": MODEL_NAME, "messages": messages, "add_generation_prompt": False}
    tokens = http.post("/tokenize", json=body).json()["tokens"]
    text: str = http.post("/detokenize", json={"model": MODEL_NAME, "tokens": tokens}).json()[
        "prompt"
    ]
    final = messages[-1]["content"]
    return text[: text.rindex(final) + len(final)]


def test_a_final_assistant_turn_is_continued(
    claude: anthropic.Anthropic, server: RunningServer
) -> None:
    messages = [*QUESTION, {"role": "assistant", "content": PREFILL}]
    with httpx.Client(base_url=server.base_url, headers=server.auth_headers, timeout=120) as http:
        prompt = _continued_prompt(http, messages)
        completion = http.post(
            "/v1/completions",
            json={"model": MODEL_NAME, "prompt": prompt, "max_tokens": 12, **GREEDY},
        ).json()
        chat = http.post(
            "/v1/chat/completions",
            json={
                "model": MODEL_NAME,
                "messages": messages,
                "max_tokens": 12,
                "continue_final_message": True,
                **GREEDY,
            },
        ).json()
    message = claude.messages.create(
        model=MODEL_NAME,
        max_tokens=12,
        messages=messages,  # type: ignore[arg-type]
        extra_body=GREEDY,
    )
    text = message.content[0].text  # type: ignore[union-attr]
    assert text == completion["choices"][0]["text"]
    assert message.usage.input_tokens == completion["usage"]["prompt_tokens"]
    assert chat["choices"][0]["message"]["content"] == text
    counted = claude.messages.count_tokens(model=MODEL_NAME, messages=messages)  # type: ignore[arg-type]
    assert counted.input_tokens == message.usage.input_tokens
    with claude.messages.stream(
        model=MODEL_NAME,
        max_tokens=12,
        messages=messages,  # type: ignore[arg-type]
        extra_body=GREEDY,
    ) as stream:
        assert "".join(stream.text_stream) == text


@pytest.mark.parametrize(
    ("final", "extra", "expected"),
    [
        ("The capital is ", {}, "cannot end with whitespace"),
        (PREFILL, {"tools": [WEATHER], "tool_choice": FORCED}, "forced tool call"),
        (
            [
                {"type": "text", "text": PREFILL},
                {"type": "tool_use", "id": "t", "name": "f", "input": {}},
            ],
            {},
            "tool calls cannot be continued",
        ),
    ],
)
def test_a_final_assistant_turn_that_cannot_be_continued_is_a_bad_request(
    claude: anthropic.Anthropic, final: Any, extra: dict[str, Any], expected: str
) -> None:
    messages = [*QUESTION, {"role": "assistant", "content": final}]
    with pytest.raises(anthropic.BadRequestError) as caught:
        claude.messages.create(
            model=MODEL_NAME,
            max_tokens=4,
            messages=messages,  # type: ignore[arg-type]
            **extra,
        )
    assert expected in caught.value.body["error"]["message"]  # type: ignore[index]


def test_no_credential_is_401_in_anthropics_shape(http: httpx.Client) -> None:
    body = {"model": MODEL_NAME, "max_tokens": 4, "messages": QUESTION}
    for path in ("/v1/messages", "/v1/messages/count_tokens"):
        _anthropic_error(http.post(path, json=body), 401, "authentication_error")
    bad = {"x-api-key": "sk-inferflux-nope"}
    _anthropic_error(http.post("/v1/messages", json=body, headers=bad), 401, "authentication_error")
    # Other routes keep OpenAI's shape.
    openai_body = http.post("/v1/chat/completions", json=body).json()
    assert openai_body["error"]["type"] == "authentication_error" and "type" not in openai_body


def test_the_x_api_key_header_is_a_credential(server: RunningServer, http: httpx.Client) -> None:
    body = {"model": MODEL_NAME, "messages": QUESTION}
    key = {"x-api-key": server.api_key, "anthropic-version": "2023-06-01"}
    response = http.post("/v1/messages/count_tokens", json=body, headers=key)
    assert response.status_code == 200 and response.json()["input_tokens"] > 0
    # Only on Anthropic's routes: elsewhere x-api-key is no credential.
    assert http.get("/v1/models", headers=key).status_code == 401
    both = {**key, "Authorization": "Bearer sk-inferflux-other"}
    _anthropic_error(
        http.post("/v1/messages/count_tokens", json=body, headers=both), 401, "authentication_error"
    )


def test_a_key_without_the_model_is_403(server: RunningServer) -> None:
    admin = PolicyAdmin(server.access.store)
    key = admin.create_key(KeyCreate(name="claude-other", roles=["user"], models=["other"]))
    with client_for(server, key["key"]) as limited:
        with pytest.raises(anthropic.PermissionDeniedError) as caught:
            limited.messages.create(model=MODEL_NAME, max_tokens=4, messages=QUESTION)
        assert caught.value.body["error"]["type"] == "permission_error"  # type: ignore[index]
        with pytest.raises(anthropic.PermissionDeniedError):
            limited.messages.count_tokens(model=MODEL_NAME, messages=QUESTION)


def test_a_key_over_its_rate_is_429_in_anthropics_shape(server: RunningServer) -> None:
    admin = PolicyAdmin(server.access.store)
    limits = RateLimits(requests_per_minute=1)
    key = admin.create_key(KeyCreate(name="claude-slow", roles=["user"], limits=limits))
    with client_for(server, key["key"]) as slow:
        slow.messages.create(model=MODEL_NAME, max_tokens=2, messages=QUESTION)
        with pytest.raises(anthropic.RateLimitError) as caught:
            slow.messages.create(model=MODEL_NAME, max_tokens=2, messages=QUESTION)
    assert caught.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert caught.value.response.headers.get("retry-after")


def test_http_errors_on_these_routes_are_in_anthropics_shape(
    server: RunningServer, http: httpx.Client
) -> None:
    headers = {**server.auth_headers, "content-type": "application/json"}
    too_big = b'{"model": "' + b"x" * TEST_BODY_LIMIT + b'"}'
    _anthropic_error(
        http.post("/v1/messages", content=too_big, headers=headers), 413, "invalid_request_error"
    )
    _anthropic_error(
        http.post("/v1/messages", content=b"{not json", headers=headers),
        400,
        "invalid_request_error",
    )
    _anthropic_error(
        http.post("/v1/messages", content=b"[]", headers=headers), 400, "invalid_request_error"
    )
    _anthropic_error(
        http.get("/v1/messages", headers=server.auth_headers), 405, "invalid_request_error"
    )
    _anthropic_error(
        http.post("/v1/messages/batches", json={}, headers=server.auth_headers),
        404,
        "not_found_error",
    )


# -- structured output -----------------------------------------------------------------------


class City(pydantic.BaseModel):
    """What ``messages.parse`` is asked for."""

    name: str = pydantic.Field(max_length=40)
    country: str = pydantic.Field(max_length=40)


def test_output_config_format_makes_the_answer_match_the_schema(
    claude: anthropic.Anthropic,
) -> None:
    parsed = claude.messages.parse(
        model=MODEL_NAME,
        max_tokens=64,
        messages=[{"role": "user", "content": "Name a city in France as JSON."}],
        output_format=City,
        extra_body=GREEDY,
    )
    assert isinstance(parsed.parsed_output, City), parsed.content
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 9}},
        "required": ["n"],
        "additionalProperties": False,
    }
    with claude.messages.stream(
        model=MODEL_NAME,
        max_tokens=32,
        messages=[{"role": "user", "content": "Pick a number."}],
        output_config={"format": {"type": "json_schema", "schema": schema}},
        extra_body=GREEDY,
    ) as stream:
        text = "".join(stream.text_stream)
    jsonschema.validate(json.loads(text), schema)
    with pytest.raises(anthropic.BadRequestError, match=r"output_config\.effort"):
        claude.messages.create(
            model=MODEL_NAME, max_tokens=4, messages=QUESTION, output_config={"effort": "high"}
        )
