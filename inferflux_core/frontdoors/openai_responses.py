"""``POST /v1/responses``: OpenAI's Responses wire format to typed requests and back.

The door parses a body (with the stored conversation ``previous_response_id`` continues)
into one :class:`~inferflux_core.contracts.generation.InferenceRequest`, and encodes the
typed events as a Response object or its event stream. What the model cannot honour
(built-in tools, reasoning options, background mode, images) is a 400 naming the field.
Stored responses live in the door's :class:`ResponseStore`, per owner.
"""

from __future__ import annotations

from typing import Any

from inferflux_core.contracts.generation import (
    DEFAULTABLE_SAMPLING,
    GenerationOptions,
    InferenceRequest,
    OutputConstraint,
    ToolChoice,
    ToolSpec,
)
from inferflux_core.engine.collect import Collected
from inferflux_core.errors import InvalidRequestError, NotFoundError
from inferflux_core.frontdoors.driver import Call, Chunk
from inferflux_core.frontdoors.openai_responses_input import conversation, input_items, item_id
from inferflux_core.frontdoors.openai_responses_output import (
    ResponseTurn,
    output_items,
    response_object,
)
from inferflux_core.frontdoors.openai_responses_store import ResponseStore
from inferflux_core.frontdoors.openai_responses_stream import ResponseEvents
from inferflux_core.frontdoors.options import check_stream_flag
from inferflux_core.protocol.common import parse_body
from inferflux_core.protocol.responses import CreateResponseRequest, parse_tool
from inferflux_core.tools import conversation_text


class ResponsesDoor:
    """The Responses front door, with its store of responses."""

    endpoint = "responses"

    def __init__(self, store: ResponseStore | None = None) -> None:
        self.store = store if store is not None else ResponseStore()

    def parse(self, body: Any, owner: str | None = None) -> Call:
        """The typed request of a body; ``owner`` is whose stored responses
        ``previous_response_id`` may name (None: none)."""
        check_stream_flag(body)
        wire = parse_body(CreateResponseRequest, body)
        wire.refuse_unsupported()
        tools = [parse_tool(tool, index) for index, tool in enumerate(wire.tools or ())]
        context = self._previous(wire, owner) + input_items(wire)
        if not context:
            raise InvalidRequestError("input: this field is required", param="input")
        turn = ResponseTurn(wire, item_id("resp"), tools, context, owner)
        request = InferenceRequest(
            model=wire.model,
            messages=conversation(wire.instructions, context),
            options=GenerationOptions(
                temperature=1.0 if wire.temperature is None else wire.temperature,
                top_p=1.0 if wire.top_p is None else wire.top_p,
                seed=wire.seed,
                max_tokens=wire.max_output_tokens,
                logprobs=wire.logprobs_requested,
                unset=frozenset(f for f in DEFAULTABLE_SAMPLING if getattr(wire, f, None) is None),
            ),
            tools=tuple(
                ToolSpec(t.name, t.description, t.parameters, bool(t.strict)) for t in tools
            ),
            tool_choice=tool_choice(wire.tool_choice, bool(tools)),
            parallel_tool_calls=wire.parallel_tool_calls is not False,
            constraint=text_constraint(wire),
            priority=wire.priority,
            request_id=turn.response_id,
            keep_alive=wire.keep_alive,
        )
        return Call((request,), wire.stream, turn)

    def input_text(self, call: Call) -> str:
        """The conversation's text, labels and tool definitions, as for chat."""
        return conversation_text(call.requests[0])

    def encode(self, call: Call, result: Collected) -> Chunk:
        """The whole Response object."""
        choice = result.choices[0]
        return response_object(
            call.wire,
            "completed",
            output_items(choice),
            result.usage,
            finish_reason=choice.finish_reason,
        )

    def stream_encoder(self, call: Call) -> ResponseEvents:
        """The Responses event stream (kept on the turn, which the HTTP layer reads)."""
        encoder = ResponseEvents(call.wire)
        call.wire.encoder = encoder
        return encoder

    def keep(self, turn: ResponseTurn, response: dict[str, Any]) -> None:
        """Store ``response`` for its owner, if the request asked to."""
        if turn.stores and turn.owner is not None and response["status"] != "failed":
            self.store.put(turn.owner, response, turn.context)

    def _previous(self, wire: CreateResponseRequest, owner: str | None) -> list[dict[str, Any]]:
        """The stored conversation ``previous_response_id`` continues: its context and its
        output; 404 for an id this owner has no response under."""
        if wire.previous_response_id is None:
            return []
        entry = None if owner is None else self.store.get(owner, wire.previous_response_id)
        if entry is None:
            raise NotFoundError(
                f"previous_response_id: no response with id {wire.previous_response_id!r} "
                "was found",
                param="previous_response_id",
            )
        return list(entry.context) + list(entry.response["output"])


def tool_choice(choice: Any, has_tools: bool) -> ToolChoice:
    """The Responses ``tool_choice`` as the engine's; 400 naming what is wrong."""
    if choice is None or choice == "auto":
        return ToolChoice()
    if choice == "none":
        return ToolChoice("none")
    if (choice == "required" or isinstance(choice, dict)) and not has_tools:
        raise InvalidRequestError(
            "tool_choice: a tool can only be required when 'tools' are given",
            param="tool_choice",
        )
    if choice == "required":
        return ToolChoice("required")
    if isinstance(choice, dict):
        kind = choice.get("type")
        name = choice.get("name")
        if kind != "function":
            shown = kind[:64] if isinstance(kind, str) else type(kind).__name__
            raise InvalidRequestError(
                f"tool_choice.type: {shown!r} is not supported; use 'function' with a name",
                param="tool_choice.type",
                code="unsupported",
            )
        if not isinstance(name, str) or not name:
            raise InvalidRequestError(
                "tool_choice.name: this field is required (a string)", param="tool_choice.name"
            )
        return ToolChoice("function", name[:256])
    raise InvalidRequestError(
        "tool_choice: must be 'none', 'auto', 'required' or "
        '{"type": "function", "name": ...}',
        param="tool_choice",
    )


def text_constraint(wire: CreateResponseRequest) -> OutputConstraint | None:
    """``text.format`` as the engine's output constraint (None for text)."""
    form = wire.text.format if wire.text is not None else None
    if form is None or form.type == "text":
        return None
    if form.type == "json_object":
        return OutputConstraint("json_object", param="text.format")
    if not form.name:
        raise InvalidRequestError(
            "text.format.name: this field is required (a string)", param="text.format.name"
        )
    if form.schema_ is None:
        raise InvalidRequestError(
            "text.format.schema: this field is required (a JSON Schema object)",
            param="text.format.schema",
        )
    return OutputConstraint("json_schema", schema=form.schema_, param="text.format.schema")
