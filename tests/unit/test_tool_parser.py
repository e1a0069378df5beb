"""Tool calls parsed out of model output: whole or in any pieces, linear on hostile output."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inferflux_core.contracts import Finish, TextDelta, ToolCallDelta
from inferflux_core.engine.collect import Collector
from inferflux_core.frontdoors.openai_chat import chat_delta
from inferflux_core.frontdoors.openai_chat import chat_message as wire_message
from inferflux_core.tools import ChoiceOutput, ToolPlan
from inferflux_core.tools.parser import CallStart, Text, ToolCallParser

AUTO = ToolPlan("auto")
TWO_CALLS = (
    "Let me check.\n"
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "tags": ["a}", {"b": 1}]}}'
    "\n</tool_call>\n"
    '<tool_call>\n{"name": "get_time", "arguments": {"timezone": "Europe/Paris"}}\n</tool_call>'
)
#: Blocks that take the slow path: parsed whole once closed, or given back as text.
OTHER_SHAPES = (
    'x <tool_call>{"arguments": {"q": "</tool"}, "name": "search"}</tool_call> y '
    "<tool_call>" + "junk " * 40 + "</tool_call> z"
)


def without_ids(message: dict[str, Any]) -> dict[str, Any]:
    calls = [{**c, "id": None} for c in message.get("tool_calls", [])]
    return {**message, "tool_calls": calls} if calls else message


def assembled(events: list[TextDelta | ToolCallDelta]) -> dict[str, Any]:
    """The whole ``message`` the chat front door makes of a choice's events."""
    collector = Collector()
    for event in [*events, Finish(0, "stop")]:
        collector.add(event)
    return wire_message(collector.result().choices[0])


def chat_message(plan: ToolPlan, text: str, finish_reason: str) -> tuple[dict[str, Any], str]:
    """The ``message`` and ``finish_reason`` of a complete output."""
    output = ChoiceOutput(plan)
    events = output.push(text) + output.finish()
    return assembled(events), output.finish_reason(finish_reason)


def streamed(plan: ToolPlan, pieces: list[str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    output = ChoiceOutput(plan)
    events = [e for piece in pieces for e in output.push(piece)] + output.finish()
    return [chat_delta(e) for e in events], assembled(events)


def test_calls_and_text_around_them_are_separated() -> None:
    message, finish = chat_message(AUTO, TWO_CALLS, "stop")
    assert finish == "tool_calls"
    assert message["content"] == "Let me check."
    calls = message["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["get_weather", "get_time"]
    assert json.loads(calls[0]["function"]["arguments"]) == {
        "city": "Paris",
        "tags": ["a}", {"b": 1}],
    }
    assert json.loads(calls[1]["function"]["arguments"]) == {"timezone": "Europe/Paris"}
    assert all(c["id"].startswith("call_") and c["type"] == "function" for c in calls)
    assert calls[0]["id"] != calls[1]["id"]


def test_an_output_of_only_calls_has_null_content() -> None:
    text = '\n<tool_call>{"name": "f", "arguments": {}}</tool_call>\n'
    message, _ = chat_message(AUTO, text, "stop")
    assert message["content"] is None
    assert message["tool_calls"][0]["function"] == {"name": "f", "arguments": "{}"}


def test_plain_text_is_kept_exactly() -> None:
    text = "  Hello,\n\nworld <tool  and a < sign\n"
    assert chat_message(AUTO, text, "stop") == (
        {"role": "assistant", "content": text, "refusal": None},
        "stop",
    )


def test_a_marker_cut_off_at_the_end_is_text() -> None:
    message, finish = chat_message(AUTO, "hello <tool_ca", "length")
    assert message == {"role": "assistant", "content": "hello <tool_ca", "refusal": None}
    assert finish == "length"


@pytest.mark.parametrize("text", [TWO_CALLS, OTHER_SHAPES])
@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.floats(min_value=0, max_value=1), max_size=40))
def test_any_split_of_the_output_gives_the_same_message(text: str, cuts: list[float]) -> None:
    bounds = [0, *sorted(int(c * len(text)) for c in cuts), len(text)]
    pieces = [text[a:b] for a, b in itertools.pairwise(bounds)]
    _, message = streamed(AUTO, pieces)
    whole, _ = chat_message(AUTO, text, "stop")
    assert without_ids(message) == without_ids(whole)


def test_a_block_in_another_shape_is_found_in_two_character_pieces() -> None:
    _, message = streamed(AUTO, [OTHER_SHAPES[i : i + 2] for i in range(0, len(OTHER_SHAPES), 2)])
    assert message["content"] == "x  y <tool_call>" + "junk " * 40 + "</tool_call> z"
    (call,) = message["tool_calls"]
    assert call["function"] == {"name": "search", "arguments": '{"q": "</tool"}'}


def test_stream_sends_name_first_then_argument_fragments_and_no_markup() -> None:
    deltas, _ = streamed(AUTO, [TWO_CALLS[i : i + 3] for i in range(0, len(TWO_CALLS), 3)])
    text = "".join(d.get("content", "") for d in deltas)
    assert text == "Let me check."
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    first = calls[0]
    assert first["index"] == 0 and first["type"] == "function"
    assert first["function"] == {"name": "get_weather", "arguments": ""}
    fragments = [c for c in calls if c["index"] == 0 and "id" not in c]
    assert len(fragments) > 3, "arguments should stream in fragments"
    assert all(set(c) == {"index", "function"} for c in fragments)
    starts = [c for c in calls if "id" in c]
    assert [c["index"] for c in starts] == [0, 1]


def test_parallel_tool_calls_false_keeps_only_the_first_call() -> None:
    message, finish = chat_message(ToolPlan("auto", max_calls=1), TWO_CALLS, "stop")
    assert [c["function"]["name"] for c in message["tool_calls"]] == ["get_weather"]
    assert finish == "tool_calls"


@pytest.mark.parametrize(
    ("block", "name", "arguments"),
    [
        ('{"arguments": {"q": "x"}, "name": "search"}', "search", {"q": "x"}),
        ('{"name": "search", "parameters": {"q": "x"}}', "search", {"q": "x"}),
        ('{"name": "search", "arguments": "{\\"q\\": \\"x\\"}"}', "search", {"q": "x"}),
    ],
)
def test_calls_in_other_shapes_are_parsed_whole(
    block: str, name: str, arguments: dict[str, Any]
) -> None:
    message, _ = chat_message(AUTO, f"<tool_call>{block}</tool_call>", "stop")
    (call,) = message["tool_calls"]
    assert call["function"]["name"] == name
    assert json.loads(call["function"]["arguments"]) == arguments


@pytest.mark.parametrize(
    "block",
    ["not json at all", '{"name": "bad name!", "arguments": {}}', '["f", {}]', '{"name": "f"}'],
)
def test_a_block_that_is_not_a_call_is_given_back_as_text(block: str) -> None:
    text = f"Answer: <tool_call>{block}</tool_call>"
    assert chat_message(AUTO, text, "stop") == (
        {"role": "assistant", "content": text, "refusal": None},
        "stop",
    )


def test_a_call_cut_off_by_the_token_limit_keeps_finish_reason_length() -> None:
    message, finish = chat_message(AUTO, '<tool_call>{"name": "f", "arguments": {"a": "x', "length")
    assert finish == "length"
    assert message["tool_calls"][0]["function"] == {"name": "f", "arguments": '{"a": "x'}


def test_without_tools_the_output_is_not_parsed() -> None:
    text = '<tool_call>{"name": "f", "arguments": {}}</tool_call>'
    message, finish = chat_message(ToolPlan(), text, "stop")
    assert (message, finish) == ({"role": "assistant", "content": text, "refusal": None}, "stop")


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "hostile",
    [
        "<tool_call>" + "[" * 10_000,
        "<tool_call>" + "{" * 100_000 + "}" * 100_000 + "</tool_call>",
        '<tool_call>{"name": "f", "arguments": ' + "[" * 100_000 + "</tool_call>",
        "<tool_call>" * 20_000,
        '<tool_call>{"name": "f", "arguments": "' + "[" * 50_000 + '"}</tool_call>',
    ],
)
def test_adversarial_output_is_handled_without_recursion(hostile: str) -> None:
    whole, _ = chat_message(AUTO, hostile, "length")
    _, pieces = streamed(AUTO, [hostile[i : i + 7] for i in range(0, len(hostile), 7)])
    assert without_ids(whole) == without_ids(pieces)


def test_parser_events_in_order() -> None:
    parser = ToolCallParser()
    events = parser.feed('hi <tool_call>{"name": "f", "arguments": {}}</tool_call>') + (
        parser.finish()
    )
    assert events[0] == Text("hi")
    assert events[1] == CallStart(0, "f")
    assert parser.calls == 1
