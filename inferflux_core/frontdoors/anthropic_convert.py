"""Anthropic's Messages request to the engine's typed request.

``system`` becomes a leading system message; a user turn's ``tool_result`` blocks become
``tool`` messages (its text blocks around them, user messages in their order); an assistant
turn's ``tool_use`` blocks become its tool calls. Text blocks of one turn are joined with a
blank line. A final assistant turn is a prefill: the model continues it (the engine's
``continue_final_message``). Anything the engine cannot take (an image, a document, a server
tool) is a 400 naming the block.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from inferflux_core.contracts.generation import (
    DEFAULTABLE_SAMPLING,
    ChatMessage,
    GenerationOptions,
    InferenceRequest,
    OutputConstraint,
    ToolCall,
    ToolChoice,
    ToolSpec,
    new_request_id,
)
from inferflux_core.errors import InvalidRequestError
from inferflux_core.protocol.anthropic import (
    Block,
    ConversationFields,
    Message,
    MessagesRequest,
    TextBlock,
    ToolDefinition,
    ToolResultBlock,
    ToolUseBlock,
)
from inferflux_core.protocol.common import parse_body, validation_error
from inferflux_core.structured.schema_rules import check_valid_schema

ModelT = TypeVar("ModelT", bound=BaseModel)
WireT = TypeVar("WireT", bound=ConversationFields)

#: How text blocks of one turn are joined.
BLOCK_SEPARATOR = "\n\n"
#: What a failed tool's result starts with (``is_error``), so the model can tell.
TOOL_ERROR_PREFIX = "Error: "

#: Blocks the engine cannot take, and what to say about each.
_UNSUPPORTED_BLOCKS = {
    "image": "image input is not supported",
    "document": "document input is not supported",
    "search_result": "search result blocks are not supported",
    "thinking": "thinking blocks are not supported (extended thinking is not)",
    "redacted_thinking": "thinking blocks are not supported (extended thinking is not)",
    "container_upload": "containers are not supported",
}
#: The blocks each role may hold.
_ALLOWED = {
    "user": ("text", "tool_result"),
    "assistant": ("text", "tool_use"),
    "system": ("text",),
}


def parse_wire(model: type[WireT], body: Any) -> WireT:
    """``body`` checked as ``model``; 400 naming a field we cannot honour, or a bad one."""
    if not isinstance(body, dict):
        raise InvalidRequestError("the request body must be a JSON object")
    model.refuse_unsupported(body)
    return parse_body(model, body)


def typed_request(wire: ConversationFields, options: GenerationOptions) -> InferenceRequest:
    """The engine request for a checked Messages (or count_tokens) body."""
    tools = typed_tools(wire.tools or [])
    choice, parallel = typed_tool_choice(wire, tools)
    priority = wire.priority if isinstance(wire, MessagesRequest) else 0
    keep_alive = wire.keep_alive if isinstance(wire, MessagesRequest) else None
    return InferenceRequest(
        model=wire.model,
        messages=typed_messages(wire),
        options=options,
        tools=tools,
        tool_choice=choice,
        parallel_tool_calls=parallel,
        constraint=output_constraint(wire),
        priority=priority,
        request_id=new_request_id("msg"),
        # A final assistant turn is a prefill: the model continues it.
        continue_final_message=bool(wire.messages) and wire.messages[-1].role == "assistant",
        keep_alive=keep_alive,
    )


def output_constraint(wire: ConversationFields) -> OutputConstraint | None:
    """``output_config.format`` as the engine's output constraint (a JSON Schema)."""
    config = wire.output_config
    if config is None or config.format is None:
        return None
    schema = config.format.json_schema
    return OutputConstraint("json_schema", schema=schema, param="output_config.format.schema")


def sampling_options(wire: MessagesRequest) -> GenerationOptions:
    """Anthropic's sampling fields as the engine's options (already bounded)."""
    return GenerationOptions(
        temperature=wire.temperature,
        top_p=wire.top_p,
        top_k=wire.top_k,
        max_tokens=wire.max_tokens,
        stop=tuple(s for s in wire.stop_sequences or () if s),
        unset=DEFAULTABLE_SAMPLING - wire.model_fields_set,
    )


# -- messages -------------------------------------------------------------------------------


def typed_messages(wire: ConversationFields) -> tuple[ChatMessage, ...]:
    """``system`` and ``messages`` as the engine's conversation."""
    out: list[ChatMessage] = []
    system = _system_text(wire.system)
    if system:
        out.append(ChatMessage("system", system))
    for index, message in enumerate(wire.messages):
        out.extend(_turn(message, index))
    return tuple(out)


def _system_text(system: str | list[TextBlock] | None) -> str | None:
    if system is None or isinstance(system, str):
        return system
    return BLOCK_SEPARATOR.join(block.text for block in system)


def _turn(message: Message, index: int) -> list[ChatMessage]:
    where = f"messages.{index}.content"
    if isinstance(message.content, str):
        return [ChatMessage(message.role, message.content)]
    allowed = _ALLOWED[message.role]
    texts: list[str] = []
    calls: list[ToolCall] = []
    out: list[ChatMessage] = []
    for position, block in enumerate(message.content):
        at = f"{where}.{position}"
        _check_block_type(block, allowed, message.role, at)
        if block.type == "text":
            texts.append(_checked(TextBlock, block, at).text)
        elif block.type == "tool_use":
            use = _checked(ToolUseBlock, block, at)
            calls.append(ToolCall(use.id, use.name, json.dumps(use.input, ensure_ascii=False)))
        else:
            if texts:  # text before a result stays before it
                out.append(ChatMessage("user", BLOCK_SEPARATOR.join(texts)))
                texts = []
            result = _checked(ToolResultBlock, block, at)
            out.append(
                ChatMessage("tool", _result_text(result, at), tool_call_id=result.tool_use_id)
            )
    if message.role == "assistant":
        return [ChatMessage("assistant", BLOCK_SEPARATOR.join(texts), tool_calls=tuple(calls))]
    if texts or not out:
        out.append(ChatMessage(message.role, BLOCK_SEPARATOR.join(texts)))
    return out


def _check_block_type(block: Block, allowed: Sequence[str], role: str, at: str) -> None:
    if block.type in allowed:
        return
    why = _UNSUPPORTED_BLOCKS.get(block.type)
    if why is None:
        kinds = ", ".join(repr(kind) for kind in allowed)
        why = f"a {role} message holds only {kinds} blocks here, not {block.type[:64]!r}"
    raise InvalidRequestError(f"{at}.type: {why}", param=f"{at}.type", code="unsupported")


def _result_text(result: ToolResultBlock, at: str) -> str:
    content = result.content
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    else:
        pieces = []
        for position, block in enumerate(content):
            inner = f"{at}.content.{position}"
            _check_block_type(block, ("text",), "tool_result", inner)
            pieces.append(_checked(TextBlock, block, inner).text)
        text = BLOCK_SEPARATOR.join(pieces)
    return TOOL_ERROR_PREFIX + text if result.is_error else text


def _checked(model: type[ModelT], block: Block, at: str) -> ModelT:
    """``block`` validated as ``model``; 400 naming the field inside the block."""
    raw = block.model_dump()
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise nested_error(exc, raw, at) from None


def nested_error(exc: ValidationError, raw: Any, at: str) -> InvalidRequestError:
    """The 400 for a part of the body at ``at`` that failed validation, named from the body."""
    inner = validation_error(exc, raw)
    if inner.param:
        return InvalidRequestError(f"{at}.{inner.message}", param=f"{at}.{inner.param}")
    return InvalidRequestError(f"{at}: {inner.message}", param=at)


# -- tools ----------------------------------------------------------------------------------


def typed_tools(tools: list[dict[str, Any]]) -> tuple[ToolSpec, ...]:
    """Client tools as the engine's; 400 for a server tool, a bad schema or a repeated name."""
    out: list[ToolSpec] = []
    seen: set[str] = set()
    for index, raw in enumerate(tools):
        at = f"tools.{index}"
        kind = raw.get("type")
        if kind not in (None, "custom"):
            shown = str(kind)[:64]
            raise InvalidRequestError(
                f"{at}.type: the server tool {shown!r} is not supported; only client tools "
                "(name, description, input_schema) are",
                param=f"{at}.type",
                code="unsupported",
            )
        try:
            tool = ToolDefinition.model_validate(raw)
        except ValidationError as exc:
            raise nested_error(exc, raw, at) from None
        _check_input_schema(tool.input_schema, f"{at}.input_schema")
        if tool.name in seen:
            raise InvalidRequestError(
                f"{at}.name: the tool name {tool.name!r} is used twice", param=f"{at}.name"
            )
        seen.add(tool.name)
        out.append(ToolSpec(tool.name, tool.description, tool.input_schema, bool(tool.strict)))
    return tuple(out)


def _check_input_schema(schema: dict[str, Any], param: str) -> None:
    if schema.get("type") != "object":
        raise InvalidRequestError(
            f"{param}.type: must be 'object' (a tool's input is a JSON object)",
            param=f"{param}.type",
        )
    check_valid_schema(schema, param)


def typed_tool_choice(
    wire: ConversationFields, tools: tuple[ToolSpec, ...]
) -> tuple[ToolChoice, bool]:
    """``tool_choice`` as the engine's, and whether parallel calls are allowed."""
    choice = wire.tool_choice
    if choice is None:
        return ToolChoice(), True
    parallel = not choice.disable_parallel_tool_use
    if choice.type in ("auto", "none"):
        return ToolChoice(choice.type), parallel
    if not tools:
        raise InvalidRequestError(
            f"tool_choice.type: {choice.type!r} needs tools", param="tool_choice.type"
        )
    if choice.type == "any":
        return ToolChoice("required"), parallel
    if choice.name is None:
        raise InvalidRequestError(
            "tool_choice.name: this field is required", param="tool_choice.name"
        )
    if choice.name not in {tool.name for tool in tools}:
        raise InvalidRequestError(
            f"tool_choice.name: no tool named {choice.name!r} is in tools",
            param="tool_choice.name",
        )
    return ToolChoice("function", choice.name), parallel
