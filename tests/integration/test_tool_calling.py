"""Tool calling through the official OpenAI SDK against the real model and server."""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from inferflux_core.engine.prepare import render
from inferflux_core.frontdoors.openai_chat import inference_request
from inferflux_core.protocol.chat import ChatCompletionRequest
from inferflux_core.tools import plan_tools
from inferflux_core.tools.grammar import MAX_PARALLEL_CALLS
from tests.conftest import MODEL_NAME, RunningServer

WEATHER_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 30},
        "unit": {"enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "days"],
    "additionalProperties": False,
}
TIME_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {"timezone": {"type": "string", "maxLength": 40}},
    "required": ["timezone"],
}
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the weather forecast for a city",
            "parameters": WEATHER_PARAMETERS,
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "Get the current time in a timezone",
            "parameters": TIME_PARAMETERS,
        },
    },
]
SCHEMAS = {"get_weather": WEATHER_PARAMETERS, "get_time": TIME_PARAMETERS}
QUESTION = [{"role": "user", "content": "What will the weather be in Paris for 3 days?"}]


@pytest.fixture
def client(openai_client: openai.OpenAI, server: RunningServer) -> openai.OpenAI:
    """The SDK client; after the test no request may still hold a sequence."""
    yield openai_client  # type: ignore[misc]
    assert server.wait_idle(), "a request was left holding a sequence"


def assert_valid_calls(calls: Any, names: set[str]) -> None:
    assert calls, "expected at least one tool call"
    for call in calls:
        assert call.type == "function"
        assert call.id.startswith("call_")
        assert call.function.name in names
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


@pytest.mark.parametrize("seed", range(4))
def test_required_tool_choice_makes_one_valid_call(client: openai.OpenAI, seed: int) -> None:
    reply = client.chat.completions.create(
        model=MODEL_NAME,
        messages=QUESTION,  # type: ignore[arg-type]
        tools=TOOLS,  # type: ignore[arg-type]
        tool_choice="required",
        parallel_tool_calls=False,
        temperature=1.0,
        seed=seed,
        max_tokens=300,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None and len(choice.message.tool_calls) == 1
    assert_valid_calls(choice.message.tool_calls, set(SCHEMAS))


@pytest.mark.parametrize("seed", range(2))
def test_parallel_calls_are_each_valid_and_bounded(client: openai.OpenAI, seed: int) -> None:
    reply = client.chat.completions.create(
        model=MODEL_NAME,
        messages=QUESTION,  # type: ignore[arg-type]
        tools=TOOLS,  # type: ignore[arg-type]
        tool_choice="required",
        temperature=1.0,
        seed=seed,
        max_tokens=1000,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls is not None and 1 <= len(calls) <= MAX_PARALLEL_CALLS
    assert_valid_calls(calls, set(SCHEMAS))


@pytest.mark.parametrize("seed", range(3))
def test_a_named_function_is_the_one_called(client: openai.OpenAI, seed: int) -> None:
    reply = client.chat.completions.create(
        model=MODEL_NAME,
        messages=QUESTION,  # type: ignore[arg-type]
        tools=TOOLS,  # type: ignore[arg-type]
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        parallel_tool_calls=False,
        temperature=1.0,
        seed=seed,
        max_tokens=200,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1
    assert_valid_calls(calls, {"get_time"})


@pytest.mark.parametrize("parallel", [None, True])
def test_a_named_function_is_called_once_even_with_parallel_calls_allowed(
    client: openai.OpenAI, parallel: bool | None
) -> None:
    # Left to repeat, the small model calls again and again until max_tokens cuts it off;
    # instructor and LangChain force a named function without parallel_tool_calls.
    extra = {} if parallel is None else {"parallel_tool_calls": parallel}
    reply = client.chat.completions.create(
        model=MODEL_NAME,
        messages=QUESTION,  # type: ignore[arg-type]
        tools=TOOLS,  # type: ignore[arg-type]
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        temperature=0,
        max_tokens=300,
        **extra,  # type: ignore[arg-type]
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1
    assert_valid_calls(calls, {"get_weather"})


def test_streamed_forced_call_follows_openais_delta_sequence(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model=MODEL_NAME,
            messages=QUESTION,  # type: ignore[arg-type]
            tools=TOOLS,  # type: ignore[arg-type]
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            parallel_tool_calls=False,
            temperature=0.7,
            seed=5,
            max_tokens=200,
            stream=True,
        )
    )
    deltas = [c.choices[0].delta for c in chunks]
    assert deltas[0].role == "assistant"
    assert all(not d.content for d in deltas), "no text (and no markup) may leak into content"
    calls = [d.tool_calls[0] for d in deltas if d.tool_calls]
    first = calls[0]
    assert (first.index, first.type, first.function.name) == (0, "function", "get_weather")
    assert first.id is not None and first.id.startswith("call_")
    fragments = calls[1:]
    assert len(fragments) > 1, "arguments should arrive in fragments"
    assert all(f.id is None and f.function.name is None and f.index == 0 for f in fragments)
    arguments = "".join(f.function.arguments or "" for f in calls)
    jsonschema.validate(json.loads(arguments), WEATHER_PARAMETERS)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_the_sdk_stream_helper_assembles_the_calls(client: openai.OpenAI) -> None:
    with client.chat.completions.stream(
        model=MODEL_NAME,
        messages=QUESTION,  # type: ignore[arg-type]
        tools=TOOLS,  # type: ignore[arg-type]
        tool_choice="required",
        temperature=1.0,
        seed=11,
        max_tokens=300,
    ) as stream:
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert_valid_calls(choice.message.tool_calls, set(SCHEMAS))


def test_streamed_and_whole_responses_agree(client: openai.OpenAI) -> None:
    fields: dict[str, Any] = {
        "model": MODEL_NAME,
        "messages": QUESTION,
        "tools": TOOLS,
        "tool_choice": "required",
        "temperature": 0,
        "max_tokens": 200,
    }
    whole = client.chat.completions.create(**fields).choices[0]
    with client.chat.completions.stream(**fields) as stream:
        streamed = stream.get_final_completion().choices[0]
    assert whole.finish_reason == streamed.finish_reason == "tool_calls"
    assert [(c.function.name, c.function.arguments) for c in whole.message.tool_calls or []] == [
        (c.function.name, c.function.arguments) for c in streamed.message.tool_calls or []
    ]


def test_auto_answers_in_text_or_calls_never_in_markup(client: openai.OpenAI) -> None:
    fields: dict[str, Any] = {
        "model": MODEL_NAME,
        "messages": QUESTION,
        "tools": TOOLS,
        "temperature": 0,
        "max_tokens": 60,
    }
    whole = client.chat.completions.create(**fields).choices[0]
    chunks = list(client.chat.completions.create(**fields, stream=True))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    streamed_text = "".join(d.content or "" for d in deltas)
    streamed_calls = [d.tool_calls for d in deltas if d.tool_calls]
    assert (whole.message.content or "") == streamed_text
    assert bool(whole.message.tool_calls) == bool(streamed_calls)
    assert whole.finish_reason == chunks[-1].choices[0].finish_reason
    if whole.message.tool_calls:
        assert whole.finish_reason == "tool_calls"
        for call in whole.message.tool_calls:
            json.loads(call.function.arguments)
    else:
        assert whole.finish_reason in ("stop", "length")
        assert whole.message.content
    assert "<tool_call>" not in streamed_text


def test_tool_choice_none_does_not_show_the_tools(client: openai.OpenAI) -> None:
    def prompt_tokens(**fields: Any) -> int:
        reply = client.chat.completions.create(
            model=MODEL_NAME,
            messages=QUESTION,  # type: ignore[arg-type]
            max_tokens=1,
            **fields,
        )
        assert reply.choices[0].message.tool_calls is None
        assert reply.usage is not None
        return reply.usage.prompt_tokens

    plain = prompt_tokens()
    assert prompt_tokens(tools=TOOLS, tool_choice="none") == plain
    assert prompt_tokens(tools=TOOLS) > plain + 50


def test_a_two_turn_tool_conversation(client: openai.OpenAI, server: RunningServer) -> None:
    first = client.chat.completions.create(
        model=MODEL_NAME,
        messages=QUESTION,  # type: ignore[arg-type]
        tools=TOOLS,  # type: ignore[arg-type]
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False,
        temperature=0,
        max_tokens=200,
    )
    message = first.choices[0].message
    (call,) = message.tool_calls or []
    conversation: list[Any] = [
        *QUESTION,
        message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 24 C every day."},
    ]
    second = client.chat.completions.create(
        model=MODEL_NAME,
        messages=conversation,
        tools=TOOLS,  # type: ignore[arg-type]
        temperature=0,
        max_tokens=60,
    )
    answer = second.choices[0]
    assert answer.message.content or answer.message.tool_calls
    assert "<tool_call>" not in (answer.message.content or "")
    expected = "tool_calls" if answer.message.tool_calls else answer.finish_reason
    assert answer.finish_reason == expected

    request = inference_request(
        ChatCompletionRequest.model_validate(
            {"model": MODEL_NAME, "messages": conversation, "tools": TOOLS}
        )
    )
    model = server.engine.step_model(MODEL_NAME)
    prompt = render(model, request, plan_tools(request, model.backend))
    markup = json.dumps({"name": "get_weather", "arguments": json.loads(call.function.arguments)})
    assert f"<|im_start|>assistant\n<tool_call>\n{markup}\n</tool_call><|im_end|>" in prompt
    assert "<|im_start|>user\n<tool_response>\nSunny, 24 C every day.\n</tool_response>" in prompt
    assert prompt.count("<tools>\n{") == 1


BAD_REQUESTS: list[tuple[str, dict[str, Any], str]] = [
    (
        "invalid schema",
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 5}}}]},
        "tools.0.function.parameters",
    ),
    (
        "bad function name",
        {"tools": [{"type": "function", "function": {"name": "get weather!"}}]},
        "tools.0.function.name",
    ),
    (
        "unknown named function",
        {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
        "tool_choice.function.name",
    ),
    ("tool_choice without tools", {"tool_choice": "auto"}, "tool_choice"),
    ("unknown tool_choice", {"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice"),
    (
        "catastrophic pattern in a forced call",
        {
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "f",
                        "parameters": {
                            "type": "object",
                            "properties": {"s": {"type": "string", "pattern": "^(a+)+$" * 20}},
                        },
                    },
                }
            ],
            "tool_choice": "required",
        },
        "tools.0.function.parameters",
    ),
    (
        "parameters that are not an object schema",
        {
            "tools": [
                {"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}
            ]
        },
        "tools.0.function.parameters",
    ),
    (
        "a tool type other than function",
        {"tools": [{"type": "retrieval", "function": {"name": "f"}}]},
        "tools.0.type",
    ),
    (
        "a duplicate function name",
        {"tools": [TOOLS[0], TOOLS[0]]},
        "tools.1.function.name",
    ),
    (
        "schema nested too deeply",
        {
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "f",
                        "parameters": {"type": "object", "not": json.loads("[" * 40 + "]" * 40)},
                    },
                }
            ]
        },
        "tools.0.function.parameters",
    ),
    (
        "a tool message without tool_call_id",
        {"messages": [*QUESTION, {"role": "tool", "content": "x"}]},
        "messages.1.tool_call_id",
    ),
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("fields", "param"), [(f, p) for _, f, p in BAD_REQUESTS], ids=[n for n, _, _ in BAD_REQUESTS]
)
def test_bad_tool_requests_are_refused_quickly_and_the_engine_carries_on(
    client: openai.OpenAI, fields: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.with_options(timeout=5.0).chat.completions.create(
            model=MODEL_NAME,
            **{"messages": QUESTION, "max_tokens": 5, **fields},
        )
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["param"] == param, error
    assert param.split(".")[0] in error["message"]
    after = client.chat.completions.create(
        model=MODEL_NAME,
        messages=QUESTION,  # type: ignore[arg-type]
        max_tokens=2,
    )
    assert after.choices[0].finish_reason in ("stop", "length")


def test_a_forced_schema_llguidance_refuses_names_the_keyword(server: RunningServer) -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "f",
            "parameters": {"type": "object", "properties": {"s": {"not": {"type": "string"}}}},
        },
    }
    body = {"model": MODEL_NAME, "messages": QUESTION, "tools": [tool], "tool_choice": "required"}
    response = httpx.post(
        f"{server.api_url}/chat/completions", json=body, headers=server.auth_headers, timeout=30
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "tools.0.function.parameters"
    assert "not" in error["message"] and error["code"] == "unsupported"
