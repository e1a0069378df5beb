"""``POST /v1/chat/completions``: OpenAI's chat wire format to typed requests and back."""

from __future__ import annotations

import time
from typing import Any

from pydantic import ValidationError

from inferflux_core.contracts.generation import (
    ChatMessage,
    Finish,
    InferenceEvent,
    InferenceRequest,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    ToolSpec,
    UsageReport,
    new_request_id,
)
from inferflux_core.engine.adapters import qualified_name
from inferflux_core.engine.collect import ChoiceResult, Collected
from inferflux_core.errors import InvalidRequestError
from inferflux_core.frontdoors.driver import Call, Chunk
from inferflux_core.frontdoors.openai_logprobs import chat_logprobs
from inferflux_core.frontdoors.options import check_stream_flag, generation_options
from inferflux_core.frontdoors.usage import usage_object
from inferflux_core.protocol.chat import ChatCompletionRequest
from inferflux_core.protocol.chat import ChatMessage as WireMessage
from inferflux_core.protocol.common import parse_body
from inferflux_core.protocol.tools import NamedToolChoice, ToolDefinition
from inferflux_core.structured import response_format_constraint
from inferflux_core.tools import conversation_text


def typed_messages(messages: list[WireMessage]) -> tuple[ChatMessage, ...]:
    """A chat request's messages as the engine's (400 for non-text content parts)."""
    return tuple(
        ChatMessage(
            role=m.role,
            content=m.text(i) if m.content is not None else None,
            name=m.name,
            tool_calls=tuple(
                ToolCall(c.id, c.function.name, c.function.arguments) for c in m.tool_calls or ()
            ),
            tool_call_id=m.tool_call_id,
        )
        for i, m in enumerate(messages)
    )


def typed_tools(tools: list[ToolDefinition] | None) -> tuple[ToolSpec, ...]:
    """A chat request's ``tools`` as the engine's."""
    return tuple(
        ToolSpec(
            t.function.name, t.function.description, t.function.parameters, bool(t.function.strict)
        )
        for t in tools or ()
    )


def tool_choice(choice: Any, has_tools: bool) -> ToolChoice:
    """OpenAI's ``tool_choice`` as the engine's; 400 naming what is wrong."""
    if choice is None:
        return ToolChoice()
    if not has_tools:
        raise InvalidRequestError(
            "tool_choice: 'tool_choice' is only allowed when 'tools' are specified",
            param="tool_choice",
        )
    if choice in ("none", "auto", "required"):
        return ToolChoice(choice)
    if isinstance(choice, dict):
        try:
            named = NamedToolChoice.model_validate(choice)
        except ValidationError as exc:
            where = ".".join(str(part) for part in exc.errors()[0]["loc"])
            raise InvalidRequestError(
                f"tool_choice.{where}: {exc.errors()[0]['msg']}", param=f"tool_choice.{where}"
            ) from None
        return ToolChoice("function", named.function.name)
    raise InvalidRequestError(
        "tool_choice: must be 'none', 'auto', 'required' or "
        '{"type": "function", "function": {"name": ...}}',
        param="tool_choice",
    )


def inference_request(wire: ChatCompletionRequest) -> InferenceRequest:
    """The engine request for a checked chat request."""
    wire.refuse_request_template()
    return InferenceRequest(
        model=qualified_name(wire.model, wire.adapter),
        messages=typed_messages(wire.messages),
        options=generation_options(
            wire, max_tokens=wire.requested_max_tokens, logprobs=wire.logprobs_requested
        ),
        tools=typed_tools(wire.tools),
        tool_choice=tool_choice(wire.tool_choice, bool(wire.tools)),
        parallel_tool_calls=wire.parallel_tool_calls is not False,
        constraint=response_format_constraint(wire.response_format),
        priority=wire.priority,
        request_id=new_request_id("chatcmpl"),
        continue_final_message=wire.continue_final_message,
        keep_alive=wire.keep_alive,
    )


def chat_message(choice: ChoiceResult) -> dict[str, Any]:
    """OpenAI's ``message`` for a whole choice: ``content`` is null when the message is only
    tool calls, and ``refusal`` (a key OpenAI's schema requires) is always null: no model here
    refuses through a separate channel."""
    message: dict[str, Any] = {"role": "assistant", "content": choice.text, "refusal": None}
    if choice.tool_calls:
        message["content"] = choice.text or None
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in choice.tool_calls
        ]
    return message


def chat_delta(event: TextDelta | ToolCallDelta) -> dict[str, Any]:
    """A chunk's ``delta`` for new text or part of a tool call."""
    if isinstance(event, TextDelta):
        return {"content": event.text}
    call: dict[str, Any] = {"index": event.call}
    if event.id is not None:
        call.update(id=event.id, type="function")
        call["function"] = {"name": event.name, "arguments": event.arguments}
    else:
        call["function"] = {"arguments": event.arguments}
    return {"tool_calls": [call]}


class ChatDoor:
    """The chat completions front door."""

    endpoint = "chat.completions"

    def parse(self, body: Any) -> Call:
        """The typed request of a chat body."""
        check_stream_flag(body)
        wire = parse_body(ChatCompletionRequest, body)
        return Call((inference_request(wire),), wire.stream, wire, wire.n)

    def input_text(self, call: Call) -> str:
        """Each message's content, labels and the tool definitions, a line each."""
        return conversation_text(call.requests[0])

    def encode(self, call: Call, result: Collected) -> Chunk:
        """A ``chat.completion``."""
        wire: ChatCompletionRequest = call.wire
        choices = []
        for index, choice in enumerate(result.choices):
            choices.append(
                {
                    "index": index,
                    "message": chat_message(choice),
                    "logprobs": chat_logprobs(choice.logprobs) if wire.logprobs else None,
                    "finish_reason": choice.finish_reason,
                }
            )
        return {
            "id": call.requests[0].request_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": wire.model,
            "choices": choices,
            "usage": usage_object(result.usage),
        }

    def stream_encoder(self, call: Call) -> ChatChunks:
        """``chat.completion.chunk`` objects."""
        return ChatChunks(call)


class ChatChunks:
    """Typed events as ``chat.completion.chunk`` objects."""

    def __init__(self, call: Call) -> None:
        self._wire: ChatCompletionRequest = call.wire
        self._id = call.requests[0].request_id
        self._created = int(time.time())
        self._choices = call.per_request * len(call.requests)

    def start(self) -> list[Chunk]:
        """Each choice's role announcement."""
        return [self._chunk(i, {"role": "assistant", "content": ""}) for i in range(self._choices)]

    def event(self, event: InferenceEvent) -> list[Chunk]:
        """One chunk for a text, tool-call or finish event."""
        if isinstance(event, TextDelta):
            wanted = self._wire.logprobs and event.logprobs
            logprobs = chat_logprobs(event.logprobs) if wanted else None
            return [self._chunk(event.choice, chat_delta(event), logprobs=logprobs)]
        if isinstance(event, ToolCallDelta):
            return [self._chunk(event.choice, chat_delta(event))]
        if isinstance(event, Finish):
            return [self._chunk(event.choice, {}, finish=event.reason)]
        return []

    def end(self, usage: UsageReport) -> list[Chunk]:
        """The usage chunk, when ``stream_options.include_usage`` asked for one."""
        if not self._wire.include_usage:
            return []
        return [{**self._base(), "choices": [], "usage": usage_object(usage)}]

    def _base(self) -> Chunk:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._wire.model,
        }

    def _chunk(
        self,
        index: int,
        delta: dict[str, Any],
        finish: str | None = None,
        logprobs: dict[str, Any] | None = None,
    ) -> Chunk:
        out = {
            **self._base(),
            "choices": [
                {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
            ],
        }
        if self._wire.include_usage:
            out["usage"] = None
        return out
