"""What ``openai_upstream`` sends: a typed request as an OpenAI request body."""

from __future__ import annotations

import pytest

from inferflux_core.contracts import (
    ChatMessage,
    GenerationOptions,
    InferenceRequest,
    OutputConstraint,
    ToolCall,
    ToolChoice,
    ToolSpec,
)
from inferflux_core.errors import InvalidRequestError
from inferflux_plugins.backends.openai_upstream.payload import request_body, request_path

CONVERSATION = (
    ChatMessage("system", "Be brief."),
    ChatMessage("user", "Weather in Paris?"),
    ChatMessage("assistant", None, tool_calls=(ToolCall("c1", "get_weather", '{"city":"Paris"}'),)),
    ChatMessage("tool", "sunny", tool_call_id="c1"),
)


def test_a_conversation_streams_to_chat_with_usage_and_only_what_was_set() -> None:
    request = InferenceRequest("gw", messages=CONVERSATION)
    assert request_path(request) == "/chat/completions"
    assert request_body(request, "up") == {
        "model": "up",
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 1.0,
        "top_p": 1.0,
        "n": 1,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            {"role": "tool", "content": "sunny", "tool_call_id": "c1"},
        ],
    }


def test_sampling_extensions_logprobs_tools_and_schema_are_forwarded() -> None:
    options = GenerationOptions(
        temperature=0.0,
        top_k=5,
        min_p=0.1,
        seed=7,
        logit_bias={42: -100.0},
        max_tokens=9,
        stop=("END",),
        logprobs=3,
        n=2,
    )
    tool = ToolSpec("f", None, {"type": "object"}, strict=True)
    schema = {"type": "object"}
    request = InferenceRequest(
        "gw",
        messages=CONVERSATION[:2],
        options=options,
        tools=(tool,),
        tool_choice=ToolChoice("function", "f"),
        parallel_tool_calls=False,
        constraint=OutputConstraint("json_schema", schema=schema),
    )
    body = request_body(request, "up")
    assert {k: body[k] for k in ("top_k", "min_p", "seed", "logit_bias", "max_tokens", "stop")} == {
        "top_k": 5,
        "min_p": 0.1,
        "seed": 7,
        "logit_bias": {"42": -100.0},
        "max_tokens": 9,
        "stop": ["END"],
    }
    assert "repeat_penalty" not in body and "ignore_eos" not in body
    assert (body["logprobs"], body["top_logprobs"], body["n"]) == (True, 3, 2)
    assert body["tools"] == [
        {"type": "function", "function": {"name": "f", "parameters": schema, "strict": True}}
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert body["parallel_tool_calls"] is False
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": schema},
    }


def test_a_prompt_goes_to_completions_with_its_own_fields() -> None:
    options = GenerationOptions(logprobs=0, echo=True, best_of=3, n=2)
    request = InferenceRequest("gw", prompt="def f(", suffix="\n", options=options)
    assert request_path(request) == "/completions"
    body = request_body(request, "up")
    assert (body["prompt"], body["suffix"], body["logprobs"]) == ("def f(", "\n", 0)
    assert (body["echo"], body["best_of"]) == (True, 3)
    assert "messages" not in body and "top_logprobs" not in body


def test_a_grammar_is_refused_naming_where_it_came_from() -> None:
    constraint = OutputConstraint("grammar", grammar='root ::= "a"', param="grammar")
    request = InferenceRequest("gw", messages=CONVERSATION[:2], constraint=constraint)
    with pytest.raises(InvalidRequestError) as caught:
        request_body(request, "up")
    assert caught.value.param == "grammar"
