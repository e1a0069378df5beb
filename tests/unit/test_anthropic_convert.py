"""Anthropic's Messages bodies as the engine's typed requests."""

from __future__ import annotations

import json
from typing import Any

import pytest

from inferflux_core.contracts.generation import ChatMessage, ToolCall, ToolChoice
from inferflux_core.errors import InvalidRequestError
from inferflux_core.frontdoors.anthropic_messages import MessagesDoor

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}}


def _request(**fields: Any) -> Any:
    body = {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    return MessagesDoor().parse({**body, **fields}).requests[0]


def test_system_blocks_and_sampling_fields_are_mapped() -> None:
    request = _request(
        system=[
            {"type": "text", "text": "a", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "b"},
        ],
        temperature=0.5,
        top_p=0.9,
        top_k=40,
        stop_sequences=["x", ""],
        metadata={"user_id": "u"},
        service_tier="auto",
    )
    assert request.messages[0] == ChatMessage("system", "a\n\nb")
    options = request.options
    assert (options.temperature, options.top_p, options.top_k, options.max_tokens) == (
        0.5,
        0.9,
        40,
        8,
    )
    assert options.stop == ("x",)
    assert request.request_id.startswith("msg-")


def test_tool_use_and_tool_results_become_calls_and_tool_messages() -> None:
    messages = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get", "input": {"city": "Paris"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "content": [{"type": "text", "text": "no"}],
                    "is_error": True,
                },
                {"type": "text", "text": "thanks"},
            ],
        },
    ]
    request = _request(messages=messages, tools=[{"name": "get", "input_schema": SCHEMA}])
    assert request.messages[1] == ChatMessage(
        "assistant",
        "Checking.",
        tool_calls=(ToolCall("toolu_1", "get", json.dumps({"city": "Paris"})),),
    )
    assert request.messages[2:] == (
        ChatMessage("tool", "sunny", tool_call_id="toolu_1"),
        ChatMessage("tool", "Error: no", tool_call_id="toolu_2"),
        ChatMessage("user", "thanks"),
    )
    assert request.tools[0].name == "get" and request.tools[0].parameters == SCHEMA


@pytest.mark.parametrize(
    ("choice", "expected", "parallel"),
    [
        ({"type": "auto"}, ToolChoice("auto"), True),
        ({"type": "any", "disable_parallel_tool_use": True}, ToolChoice("required"), False),
        ({"type": "tool", "name": "get"}, ToolChoice("function", "get"), True),
        ({"type": "none"}, ToolChoice("none"), True),
    ],
)
def test_tool_choice_is_mapped(
    choice: dict[str, Any], expected: ToolChoice, parallel: bool
) -> None:
    request = _request(tools=[{"name": "get", "input_schema": SCHEMA}], tool_choice=choice)
    assert (request.tool_choice, request.parallel_tool_calls) == (expected, parallel)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        (
            {"messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]},
            "messages.0.content.0.type",
        ),
        (
            {"tools": [{"name": "get", "input_schema": {"type": "string"}}]},
            "tools.0.input_schema.type",
        ),
        ({"tools": [{"name": "get", "input_schema": SCHEMA}] * 2}, "tools.1.name"),
        ({"tools": [{"type": "computer_20250124", "name": "c"}]}, "tools.0.type"),
        (
            {
                "tool_choice": {"type": "tool", "name": "x"},
                "tools": [{"name": "get", "input_schema": SCHEMA}],
            },
            "tool_choice.name",
        ),
        ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, "thinking.type"),
        ({"unknown": 1}, "unknown"),
    ],
)
def test_what_cannot_be_honoured_is_a_400_naming_it(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        _request(**fields)
    assert caught.value.param == param, caught.value.message
