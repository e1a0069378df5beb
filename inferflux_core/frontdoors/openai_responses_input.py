"""A Responses request's ``input`` as items (the form they are stored and listed in) and as
the engine's chat messages."""

from __future__ import annotations

import uuid
from typing import Any

from inferflux_core.contracts.generation import ChatMessage, ToolCall
from inferflux_core.errors import InvalidRequestError
from inferflux_core.protocol.responses import (
    ContentPart,
    CreateResponseRequest,
    FunctionCallItem,
    FunctionCallOutputItem,
    InputItem,
    MessageItem,
    parse_item,
)

#: Content part types that carry text, by the role that may send them.
_TEXT_PARTS = {"input_text", "output_text", "text"}
_ASSISTANT_PARTS = _TEXT_PARTS | {"refusal"}

Item = dict[str, Any]


def item_id(prefix: str) -> str:
    """A fresh item id (``msg_...``, ``fc_...``)."""
    return f"{prefix}_{uuid.uuid4().hex}"


def input_items(wire: CreateResponseRequest) -> list[Item]:
    """``input`` as stored items, each with an id; 400 naming the item that is wrong."""
    if wire.input is None:
        return []
    if isinstance(wire.input, str):
        return [_message_item("user", wire.input, None)]
    return [_stored(parse_item(raw, index), index) for index, raw in enumerate(wire.input)]


def conversation(instructions: str | None, items: list[Item]) -> tuple[ChatMessage, ...]:
    """The chat messages for ``instructions`` (a system message) and ``items``: an
    assistant's calls join the assistant message before them, as chat templates expect."""
    messages: list[dict[str, Any]] = []
    if instructions:
        messages.append({"role": "system", "content": instructions, "tool_calls": []})
    for item in items:
        kind = item["type"]
        if kind == "message":
            text = "".join(
                part.get("text") or part.get("refusal") or "" for part in item["content"]
            )
            messages.append({"role": item["role"], "content": text, "tool_calls": []})
        elif kind == "function_call":
            call = ToolCall(item["call_id"], item["name"], item["arguments"])
            last = messages[-1] if messages else None
            if (
                last is not None
                and last["role"] == "assistant"
                and last.get("tool_call_id") is None
            ):
                last["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        else:
            messages.append(
                {
                    "role": "tool",
                    "content": item["output"],
                    "tool_calls": [],
                    "tool_call_id": item["call_id"],
                }
            )
    return tuple(
        ChatMessage(
            role=m["role"],
            content=m["content"],
            tool_calls=tuple(m["tool_calls"]),
            tool_call_id=m.get("tool_call_id"),
        )
        for m in messages
    )


def _stored(item: InputItem, index: int) -> Item:
    where = f"input.{index}"
    if isinstance(item, MessageItem):
        return _message_item(item.role, _text(item.content, item.role, where), item.id)
    if isinstance(item, FunctionCallItem):
        return {
            "id": item.id or item_id("fc"),
            "type": "function_call",
            "status": "completed",
            "call_id": item.call_id,
            "name": item.name,
            "arguments": item.arguments,
        }
    assert isinstance(item, FunctionCallOutputItem)
    return {
        "id": item.id or item_id("fco"),
        "type": "function_call_output",
        "status": "completed",
        "call_id": item.call_id,
        "output": _text(item.output, "tool", f"{where}.output"),
    }


def _message_item(role: str, text: str, given_id: str | None) -> Item:
    if role == "assistant":
        part: Item = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    else:
        part = {"type": "input_text", "text": text}
    return {
        "id": given_id or item_id("msg"),
        "type": "message",
        "role": role,
        "status": "completed",
        "content": [part],
    }


def _text(content: str | list[ContentPart], role: str, where: str) -> str:
    """A message's (or a call output's) text; 400 for images, files and audio."""
    if isinstance(content, str):
        return content
    allowed = _ASSISTANT_PARTS if role == "assistant" else _TEXT_PARTS
    pieces = []
    for index, part in enumerate(content):
        param = f"{where}.content.{index}.type" if role != "tool" else f"{where}.{index}.type"
        if part.type not in allowed:
            raise InvalidRequestError(
                f"{param}: {part.type[:64]!r} content is not supported; only text is",
                param=param,
                code="unsupported",
            )
        text = part.refusal if part.type == "refusal" else part.text
        if text is None:
            field = param.rsplit(".", 1)[0] + (".refusal" if part.type == "refusal" else ".text")
            raise InvalidRequestError(f"{field}: this field is required", param=field)
        pieces.append(text)
    return "".join(pieces)
