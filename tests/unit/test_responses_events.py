"""The Responses stream encoder on typed events, checked against OpenAI's event schemas:
item order, sequence numbers, and how a stream that fails mid-way ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from inferflux_core.api.exchange import Exchange
from inferflux_core.api.responses import ResponsesResource
from inferflux_core.contracts.generation import (
    Finish,
    InferenceEvent,
    TextDelta,
    ToolCallDelta,
    UsageReport,
)
from inferflux_core.errors import BackendError, InferfluxError
from inferflux_core.frontdoors.openai_responses import ResponsesDoor
from inferflux_core.frontdoors.openai_responses_stream import ResponseEvents
from tests.integration.openai_spec import OpenAISpec, load_spec

TOOL = {"type": "function", "name": "f", "parameters": {"type": "object"}}


@pytest.fixture(scope="module")
def spec() -> OpenAISpec:
    """OpenAI's OpenAPI document, loaded once for the module."""
    return load_spec()


def _encoder(door: ResponsesDoor, **body: Any) -> tuple[Any, ResponseEvents]:
    call = door.parse({"model": "m", "input": "Hi", "tools": [TOOL], **body}, "owner")
    encoder = door.stream_encoder(call)
    return call, encoder


def _run(encoder: ResponseEvents, events: list[InferenceEvent], usage: UsageReport) -> list[Any]:
    chunks = encoder.start()
    for event in events:
        chunks += encoder.event(event)
    return chunks + encoder.end(usage)


def test_text_then_a_call_are_two_items_in_order(spec: OpenAISpec) -> None:
    _, encoder = _encoder(ResponsesDoor())
    usage = UsageReport(7, 5, 2)
    chunks = _run(
        encoder,
        [
            TextDelta(0, "Let me "),
            TextDelta(0, "look."),
            ToolCallDelta(0, 0, id="call_1", name="f", arguments='{"a"'),
            ToolCallDelta(0, 0, arguments=": 1}"),
            Finish(0, "tool_calls"),
            usage,
        ],
        usage,
    )
    for chunk in chunks:
        spec.validate_event("ResponseStreamEvent", chunk)
    assert [c["sequence_number"] for c in chunks] == list(range(len(chunks)))
    assert [c["type"] for c in chunks] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    final = chunks[-1]["response"]
    spec.validate("Response", final)
    message, call = final["output"]
    assert message["content"][0]["text"] == "Let me look."
    assert call["call_id"] == "call_1" and call["arguments"] == '{"a": 1}'
    assert chunks[9]["output_index"] == 1 and chunks[10]["item_id"] == call["id"]
    assert final["usage"]["input_tokens_details"]["cached_tokens"] == 2
    assert encoder.final is final


def test_an_output_with_nothing_in_it_is_one_empty_message(spec: OpenAISpec) -> None:
    _, encoder = _encoder(ResponsesDoor())
    chunks = _run(encoder, [Finish(0, "stop")], UsageReport(3, 0))
    final = chunks[-1]["response"]
    spec.validate("Response", final)
    assert [item["content"][0]["text"] for item in final["output"]] == [""]


def test_a_failure_ends_the_stream_with_error_and_response_failed(spec: OpenAISpec) -> None:
    _, encoder = _encoder(ResponsesDoor())
    chunks = encoder.start() + encoder.event(TextDelta(0, "Hal"))
    chunks += encoder.failure(BackendError("the backend went away"))
    for chunk in chunks:
        spec.validate_event("ResponseStreamEvent", chunk)
    assert [c["type"] for c in chunks[-2:]] == ["error", "response.failed"]
    assert chunks[-2]["message"] == "the backend went away"
    failed = chunks[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "server_error"
    assert [c["sequence_number"] for c in chunks] == list(range(len(chunks)))


def test_the_resource_ends_a_failing_stream_and_stores_only_what_ended() -> None:
    door = ResponsesDoor()
    resource = ResponsesResource(door, None, None, None)  # type: ignore[arg-type]

    async def failing(encoder: ResponseEvents) -> AsyncIterator[Any]:
        for chunk in encoder.start():
            yield chunk
        raise InferfluxError("boom")

    async def ending(encoder: ResponseEvents) -> AsyncIterator[Any]:
        for chunk in _run(encoder, [TextDelta(0, "ok"), Finish(0, "stop")], UsageReport(1, 1)):
            yield chunk

    async def drain(source: Any) -> tuple[Any, list[Any]]:
        call, encoder = _encoder(door)
        exchange = Exchange("r", "POST", "/v1/responses")
        return call, [c async for c in resource._streamed(call.wire, source(encoder), exchange)]

    call, chunks = asyncio.run(drain(failing))
    assert chunks[-1]["type"] == "response.failed"
    assert door.store.get("owner", call.wire.response_id) is None
    call, chunks = asyncio.run(drain(ending))
    assert chunks[-1]["type"] == "response.completed"
    stored = door.store.get("owner", call.wire.response_id)
    assert stored is not None and stored.response == chunks[-1]["response"]
