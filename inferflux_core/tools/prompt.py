"""Showing tools and earlier tool calls to the model through its chat template.

A template that renders ``tools`` itself (Qwen 2.5, Llama 3.1, Hermes, ...) gets the tool list
as ``tools`` and the messages as Hugging Face templates expect them: assistant ``tool_calls``
with ``arguments`` decoded to an object, ``role: tool`` messages with their ``tool_call_id``.

Any other template (the default SmolLM2's among them) gets the fallback, the Hermes / Qwen
format: the tool list and the calling convention go at the end of the system prompt (a system
message is added if there is none), earlier calls are written into the assistant message as
``<tool_call>`` blocks, and tool results become a user turn of ``<tool_response>`` blocks
(consecutive results share one turn).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from inferflux_core.contracts.generation import ChatMessage, InferenceRequest, ToolCall, ToolSpec
from inferflux_core.errors import InvalidRequestError
from inferflux_core.tools.grammar import tool_template_dict
from inferflux_core.tools.parser import CLOSE, MAX_BLOCK_DEPTH, OPEN, nesting_depth

TOOLS_PREAMBLE = (
    "# Tools\n\n"
    "You may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n"
    "<tools>\n"
)
TOOLS_INSTRUCTIONS = (
    "\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n"
    "<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n'
    "</tool_call>"
)


def conversation(
    messages: Sequence[ChatMessage], offered: Sequence[ToolSpec], *, native: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """The ``messages`` and ``tools`` to render: as they are for a template that renders
    tools itself (``native``), else in the fallback format with ``tools`` None."""
    if native:
        tools = [tool_template_dict(tool) for tool in offered] or None
        return [_native_message(m, i) for i, m in enumerate(messages)], tools
    converted = fallback_messages(messages)
    if offered:
        converted = _with_system_text(converted, tools_block(offered))
    return converted, None


def conversation_text(request: InferenceRequest) -> str:
    """What guardrails and the audit log see of a chat request, one part a line: each
    message's content (earlier calls and results written as the fallback writes them), the
    client's labels a template may render (``name``, ``tool_call_id``, tool call ids), then
    each tool's definition."""
    messages = request.messages or ()
    texts = [m["content"] for m in fallback_messages(messages)]
    texts += [label for message in messages for label in _labels(message)]
    texts += [json.dumps(tool_template_dict(t), ensure_ascii=False) for t in request.tools]
    return "\n".join(texts)


def _labels(message: ChatMessage) -> list[str]:
    """The strings besides content that a message carries into a template."""
    labels = [message.name or "", message.tool_call_id or ""]
    labels += [call.id for call in message.tool_calls]
    return [label for label in labels if label]


def tools_block(tools: Sequence[ToolSpec]) -> str:
    """The fallback's description of the tools and how to call them."""
    signatures = "\n".join(json.dumps(tool_template_dict(t), ensure_ascii=False) for t in tools)
    return TOOLS_PREAMBLE + signatures + TOOLS_INSTRUCTIONS


def fallback_messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """Messages for a template that knows nothing of tools: calls and results as markup."""
    out: list[dict[str, Any]] = []
    previous_was_tool = False
    for index, message in enumerate(messages):
        text = message.content or ""
        if message.role == "tool":
            _require_tool_call_id(message, index)
            response = f"<tool_response>\n{text}\n</tool_response>"
            if previous_was_tool:
                out[-1]["content"] += "\n" + response
            else:
                out.append({"role": "user", "content": response})
            previous_was_tool = True
            continue
        previous_was_tool = False
        if message.tool_calls:
            blocks = [_call_markup(call) for call in message.tool_calls]
            text = "\n".join(([text] if text else []) + blocks)
        entry: dict[str, Any] = {"role": message.role, "content": text}
        if message.name:
            entry["name"] = message.name
        out.append(entry)
    return out


def _with_system_text(messages: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    """``text`` appended to the leading system (or developer) message, or as a new one."""
    if messages and messages[0]["role"] in ("system", "developer"):
        first = dict(messages[0])
        first["content"] = f"{first['content']}\n\n{text}" if first["content"] else text
        return [first, *messages[1:]]
    return [{"role": "system", "content": text}, *messages]


def _native_message(message: ChatMessage, index: int) -> dict[str, Any]:
    entry: dict[str, Any] = {"role": message.role, "content": message.content or ""}
    if message.name:
        entry["name"] = message.name
    if message.role == "tool":
        _require_tool_call_id(message, index)
        entry["tool_call_id"] = message.tool_call_id
    if message.tool_calls:
        entry["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": _decoded_arguments(call.arguments)},
            }
            for call in message.tool_calls
        ]
    return entry


def _call_markup(call: ToolCall) -> str:
    payload = {"name": call.name, "arguments": _decoded_arguments(call.arguments)}
    return f"{OPEN}\n{json.dumps(payload, ensure_ascii=False)}\n{CLOSE}"


def _decoded_arguments(arguments: str) -> Any:
    """The arguments as an object, as templates expect; the string itself if it is not JSON."""
    if nesting_depth(arguments) > MAX_BLOCK_DEPTH:
        return arguments
    try:
        return json.loads(arguments)
    except (ValueError, RecursionError):
        return arguments


def _require_tool_call_id(message: ChatMessage, index: int) -> None:
    if not message.tool_call_id:
        raise InvalidRequestError(
            f"messages.{index}.tool_call_id: this field is required for role 'tool'",
            param=f"messages.{index}.tool_call_id",
        )
