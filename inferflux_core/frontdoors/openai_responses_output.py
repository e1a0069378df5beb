"""The Response object and its output items, as OpenAI's Responses API writes them."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from inferflux_core.contracts.generation import TextLogprob, UsageReport
from inferflux_core.engine.collect import ChoiceResult
from inferflux_core.frontdoors.openai_logprobs import part_logprobs
from inferflux_core.frontdoors.openai_responses_input import Item, item_id
from inferflux_core.protocol.responses import CreateResponseRequest, FunctionTool

#: Finish reasons that leave a response ``incomplete``, and the reason OpenAI gives.
INCOMPLETE_REASONS = {"length": "max_output_tokens", "content_filter": "content_filter"}


@dataclass(slots=True)
class ResponseTurn:
    """One ``POST /v1/responses``: the checked request, the response's id, the conversation
    it answers (stored with it) and, while streaming, the next event's sequence number."""

    request: CreateResponseRequest
    response_id: str
    tools: list[FunctionTool]
    context: list[Item]
    owner: str | None = None
    created_at: int = field(default_factory=lambda: int(time.time()))
    sequence: int = 0
    #: The stream's encoder, once the driver asked for one (the HTTP layer ends a failed
    #: stream with it).
    encoder: Any = None

    @property
    def stores(self) -> bool:
        """Whether the response is kept (``store`` defaults to true, as OpenAI's)."""
        return self.request.store is not False

    def next_sequence(self) -> int:
        """The next event's ``sequence_number`` (from 0)."""
        number = self.sequence
        self.sequence += 1
        return number


def usage_object(report: UsageReport) -> dict[str, Any]:
    """The Responses API's ``usage``."""
    return {
        "input_tokens": report.prompt_tokens,
        "input_tokens_details": {"cached_tokens": report.cached_tokens, "cache_write_tokens": 0},
        "output_tokens": report.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": report.total_tokens,
    }


def text_part(text: str, logprobs: Sequence[TextLogprob] = ()) -> Item:
    """An ``output_text`` content part, with its tokens' logprobs when they were asked for."""
    return {
        "type": "output_text",
        "text": text,
        "annotations": [],
        "logprobs": part_logprobs(logprobs),
    }


def message_item(
    text: str | None,
    status: str,
    given_id: str | None = None,
    logprobs: Sequence[TextLogprob] = (),
) -> Item:
    """An assistant message item (``text`` None: no content part yet)."""
    return {
        "id": given_id or item_id("msg"),
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [] if text is None else [text_part(text, logprobs)],
    }


def call_item(call_id: str, name: str, arguments: str, status: str, given_id: str | None) -> Item:
    """A ``function_call`` item."""
    return {
        "id": given_id or item_id("fc"),
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def output_items(choice: ChoiceResult) -> list[Item]:
    """A whole choice's output: its text as one message (left out when there are only
    calls), then one item per call."""
    status = "incomplete" if choice.finish_reason in INCOMPLETE_REASONS else "completed"
    items: list[Item] = []
    if choice.text or not choice.tool_calls:
        items.append(message_item(choice.text, status, logprobs=choice.logprobs))
    for call in choice.tool_calls:
        items.append(call_item(call.id, call.name, call.arguments, status, None))
    return items


def response_object(
    turn: ResponseTurn,
    status: str,
    output: list[Item],
    usage: UsageReport | None,
    *,
    finish_reason: str | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The Response object: status, output and usage, and the request's settings echoed."""
    wire = turn.request
    reason = INCOMPLETE_REASONS.get(finish_reason or "")
    if status == "completed" and reason is not None:
        status = "incomplete"
    response: dict[str, Any] = {
        "id": turn.response_id,
        "object": "response",
        "created_at": turn.created_at,
        "status": status,
        "completed_at": int(time.time()) if status == "completed" else None,
        "background": False,
        "error": error,
        "incomplete_details": {"reason": reason} if status == "incomplete" else None,
        "instructions": wire.instructions,
        "max_output_tokens": wire.max_output_tokens,
        "max_tool_calls": wire.max_tool_calls,
        "model": wire.model,
        "output": output,
        "parallel_tool_calls": wire.parallel_tool_calls is not False,
        "previous_response_id": wire.previous_response_id,
        "prompt_cache_key": wire.prompt_cache_key,
        "reasoning": {"effort": None, "summary": None},
        "safety_identifier": wire.safety_identifier,
        "service_tier": "default",
        "store": turn.stores,
        "temperature": 1.0 if wire.temperature is None else wire.temperature,
        "text": {"format": _format_echo(wire), "verbosity": "medium"},
        "tool_choice": "auto" if wire.tool_choice is None else wire.tool_choice,
        "tools": [_tool_echo(tool) for tool in turn.tools],
        "top_logprobs": wire.top_logprobs or 0,
        "top_p": 1.0 if wire.top_p is None else wire.top_p,
        "truncation": "disabled",
        "metadata": dict(wire.metadata or {}),
    }
    if usage is not None:  # no usage yet (a stream's first events): left out, never null
        response["usage"] = usage_object(usage)
    if wire.user is not None:  # OpenAI's schema has it a string, never null
        response["user"] = wire.user
    return response


def _format_echo(wire: CreateResponseRequest) -> dict[str, Any]:
    form = wire.text.format if wire.text is not None else None
    if form is None or form.type == "text":
        return {"type": "text"}
    if form.type == "json_object":
        return {"type": "json_object"}
    echo: dict[str, Any] = {
        "type": "json_schema",
        "name": form.name,
        "schema": form.schema_,
        "strict": bool(form.strict),
    }
    if form.description is not None:
        echo["description"] = form.description
    return echo


def _tool_echo(tool: FunctionTool) -> dict[str, Any]:
    return {
        "type": "function",
        "name": tool.name,
        "description": tool.description,
        "parameters": tool.parameters_schema(),
        "strict": bool(tool.strict),
    }
