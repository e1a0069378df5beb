"""The Messages front door's encoders and Anthropic's SSE, checked against the SDK's types.

The typed events here are written by hand (a test double for the engine): the encoders are
tested in isolation; tests/integration/test_anthropic_messages.py runs them on a real model.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import pydantic
import pytest

from inferflux_core.api.anthropic_errors import ANTHROPIC_SSE, anthropic_error_type
from inferflux_core.api.sse import sse_stream
from inferflux_core.contracts.generation import (
    Finish,
    InferenceEvent,
    TextDelta,
    ToolCallDelta,
    UsageReport,
)
from inferflux_core.engine.collect import Collector
from inferflux_core.errors import InvalidRequestError, ServiceUnavailableError
from inferflux_core.frontdoors.anthropic_messages import MessagesDoor
from inferflux_core.frontdoors.driver import Call

EVENT = pydantic.TypeAdapter(anthropic.types.RawMessageStreamEvent)
BODY = {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
EVENTS: list[InferenceEvent] = [
    UsageReport(5, 0),
    TextDelta(0, "Let me "),
    TextDelta(0, "check."),
    ToolCallDelta(0, 0, "call_abc", "get_weather", '{"city": '),
    ToolCallDelta(0, 0, arguments='"Paris"}'),
    ToolCallDelta(0, 1, "call_def", "get_time", "{}"),
    Finish(0, "tool_calls"),
    UsageReport(5, 9),
]


def _call(**extra: Any) -> Call:
    return MessagesDoor().parse({**BODY, **extra})


def _stream(events: list[InferenceEvent], call: Call | None = None) -> list[dict[str, Any]]:
    encoder = MessagesDoor().stream_encoder(call or _call())
    out = encoder.start()
    for event in events:
        out += encoder.event(event)
        if isinstance(event, Finish) and event.reason == "content_filter":
            return out
    last = events[-1]
    assert isinstance(last, UsageReport)
    return out + encoder.end(last)


def test_the_stream_is_anthropics_event_sequence() -> None:
    chunks = _stream(EVENTS)
    for chunk in chunks:
        if chunk["type"] != "ping":
            EVENT.validate_python(chunk)
    kinds = [(c["type"], c.get("index")) for c in chunks]
    assert kinds == [
        ("message_start", None),
        ("ping", None),
        ("content_block_start", 0),
        ("content_block_delta", 0),
        ("content_block_delta", 0),
        ("content_block_stop", 0),
        ("content_block_start", 1),
        ("content_block_delta", 1),
        ("content_block_delta", 1),
        ("content_block_stop", 1),
        ("content_block_start", 2),
        ("content_block_delta", 2),
        ("content_block_stop", 2),
        ("message_delta", None),
        ("message_stop", None),
    ]
    assert chunks[0]["message"]["usage"]["input_tokens"] == 5
    assert chunks[6]["content_block"] == {
        "type": "tool_use",
        "id": "toolu_abc",
        "name": "get_weather",
        "input": {},
    }
    assert chunks[-2]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert chunks[-2]["usage"]["output_tokens"] == 9


def test_the_whole_message_validates_as_the_sdks_message() -> None:
    collector = Collector()
    for event in EVENTS:
        collector.add(event)
    body = MessagesDoor().encode(_call(), collector.result())
    message = anthropic.types.Message.model_validate(body)
    assert [b.type for b in message.content] == ["text", "tool_use", "tool_use"]
    assert message.content[1].input == {"city": "Paris"}  # type: ignore[union-attr]
    assert (message.stop_reason, message.usage.output_tokens) == ("tool_use", 9)


def test_a_stop_sequence_is_named_whole_and_streamed() -> None:
    events: list[InferenceEvent] = [
        UsageReport(5, 0),
        TextDelta(0, "one"),
        Finish(0, "stop", stop_sequence="two"),
        UsageReport(5, 2),
    ]
    chunks = _stream(events, _call(stop_sequences=["two"]))
    assert chunks[-2]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "two"}
    collector = Collector()
    for event in events:
        collector.add(event)
    body = MessagesDoor().encode(_call(stop_sequences=["two"]), collector.result())
    assert (body["stop_reason"], body["stop_sequence"]) == ("stop_sequence", "two")


def test_an_empty_answer_still_has_a_text_block() -> None:
    chunks = _stream([UsageReport(5, 0), Finish(0, "stop"), UsageReport(5, 1)])
    assert [c["type"] for c in chunks[2:4]] == ["content_block_start", "content_block_stop"]
    assert chunks[-2]["delta"]["stop_reason"] == "end_turn"


def test_a_guardrail_block_ends_the_message_with_refusal() -> None:
    events: list[InferenceEvent] = [
        UsageReport(5, 0),
        TextDelta(0, "some"),
        UsageReport(5, 3),
        Finish(0, "content_filter"),
    ]
    chunks = _stream(events)
    ends = ["content_block_stop", "message_delta", "message_stop"]
    assert [c["type"] for c in chunks[-3:]] == ends
    assert chunks[-2]["delta"]["stop_reason"] == "refusal"
    assert chunks[-2]["usage"]["output_tokens"] == 3


async def _sse(chunks: AsyncIterator[dict[str, Any]]) -> list[Any]:
    return [event async for event in sse_stream(chunks, wire=ANTHROPIC_SSE)]


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (ServiceUnavailableError("the model failed"), "overloaded_error"),
        (InvalidRequestError("bad"), "invalid_request_error"),
        (RuntimeError("boom"), "api_error"),
    ],
)
def test_a_failure_mid_stream_is_an_error_event_and_no_done(error: Exception, kind: str) -> None:
    async def chunks() -> AsyncIterator[dict[str, Any]]:
        yield {"type": "message_stop"}
        raise error

    events = asyncio.run(_sse(chunks()))
    assert [e.event for e in events] == ["message_stop", "error"]
    body = json.loads(events[1].data)
    assert body["type"] == "error" and body["error"]["type"] == kind
    assert "boom" not in events[1].data.decode()


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "invalid_request_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (503, "overloaded_error"),
    ],
)
def test_statuses_map_to_anthropics_error_types(status: int, kind: str) -> None:
    assert anthropic_error_type(status) == kind
