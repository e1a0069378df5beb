"""The pieces of Anthropic's answers both the whole ``message`` and its stream are made of:
stop reasons, ids, usage, content blocks and the ``message`` object."""

from __future__ import annotations

import json
from typing import Any

from inferflux_core.contracts.generation import UsageReport
from inferflux_core.engine.collect import ChoiceResult
from inferflux_core.frontdoors.driver import Call
from inferflux_core.protocol.anthropic import MessagesRequest
from inferflux_core.structured.limits import nesting_depth

#: Anthropic's ``stop_reason`` for the engine's finish reasons (``stop`` is ``end_turn``, or
#: ``stop_sequence`` when a stop string ended the output). A guardrail's block is a
#: ``refusal``, as Anthropic's own streaming classifiers end a message.
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}
#: The deepest tool input decoded into a ``tool_use`` block.
MAX_INPUT_DEPTH = 64


def stop_reason(reason: str | None, stop_sequence: str | None) -> str:
    """Anthropic's ``stop_reason`` for a finished choice."""
    if reason == "stop" and stop_sequence is not None:
        return "stop_sequence"
    return STOP_REASONS.get(reason or "stop", "end_turn")


def message_id(call: Call) -> str:
    """``msg_`` and the request id's random part."""
    return "msg_" + call.requests[0].request_id.split("-", 1)[-1]


def tool_use_id(call_id: str) -> str:
    """A call id as Anthropic writes them (``toolu_...``); any id a client sends back works."""
    return "toolu_" + call_id.removeprefix("call_")


def tool_input(arguments: str) -> dict[str, Any]:
    """A call's JSON arguments as the ``input`` object (empty if they are not one)."""
    if not arguments or nesting_depth(arguments) > MAX_INPUT_DEPTH:
        return {}
    try:
        value = json.loads(arguments)
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def usage_object(report: UsageReport) -> dict[str, int]:
    """Anthropic's ``usage``: ``input_tokens`` excludes the prompt tokens read from the cache
    (``cache_read_input_tokens``), so their sum is the whole prompt."""
    return {
        "input_tokens": report.prompt_tokens - report.cached_tokens,
        "output_tokens": report.completion_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": report.cached_tokens,
    }


def content_blocks(choice: ChoiceResult) -> list[dict[str, Any]]:
    """A whole answer's blocks: its text (always, unless it is only tool calls), then each
    tool call."""
    blocks: list[dict[str, Any]] = []
    if choice.text or not choice.tool_calls:
        blocks.append({"type": "text", "text": choice.text})
    for call in choice.tool_calls:
        blocks.append(
            {
                "type": "tool_use",
                "id": tool_use_id(call.id),
                "name": call.name,
                "input": tool_input(call.arguments),
            }
        )
    return blocks


def message_object(
    call: Call,
    content: list[dict[str, Any]],
    usage: UsageReport,
    reason: str | None = None,
    stop_sequence: str | None = None,
) -> dict[str, Any]:
    """A ``message`` object (``reason`` None: not finished yet, as ``message_start`` has)."""
    wire: MessagesRequest = call.wire
    return {
        "id": message_id(call),
        "type": "message",
        "role": "assistant",
        "model": wire.model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": stop_sequence,
        "usage": usage_object(usage),
    }
