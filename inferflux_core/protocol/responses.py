"""``POST /v1/responses`` request body (OpenAI's Responses API), bounded like the others.

The top-level fields are one pydantic model; ``input`` items and ``tools`` are validated one
by one (:func:`parse_item`, :func:`parse_tool`) so that an error names the item
(``input.3.content.0.type``) and a tool we cannot run names its type (``tools.0.type``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, Field, StrictBool, StrictInt, ValidationError

from inferflux_core.contracts.generation import MAX_PRIORITY
from inferflux_core.errors import InvalidRequestError
from inferflux_core.keep_alive import RequestKeepAlive
from inferflux_core.protocol.common import (
    MAX_NAME_CHARS,
    MAX_SEED,
    MIN_SEED,
    MaxTokens,
    Name,
    OpenAIModel,
    Text,
    validation_error,
)
from inferflux_core.protocol.tools import MAX_TOOLS, FunctionDefinition

#: Items in ``input`` (with a previous response's, the conversation may be longer; the model's
#: context bounds it).
MAX_INPUT_ITEMS = 2048
MAX_CONTENT_PARTS = 256
#: OpenAI's bounds on ``metadata``: 16 pairs, keys of 64 characters, values of 512.
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512
MAX_INCLUDE = 16
#: ``include`` values that need nothing we lack: there are never reasoning items to encrypt.
HARMLESS_INCLUDES = frozenset({"reasoning.encrypted_content"})
#: The ``include`` value that asks for the output text's token logprobs.
LOGPROBS_INCLUDE = "message.output_text.logprobs"
SUPPORTED_INCLUDES = HARMLESS_INCLUDES | {LOGPROBS_INCLUDE}

ItemT = TypeVar("ItemT", bound=BaseModel)


class ContentPart(OpenAIModel):
    """A part of a message's content: only text parts are supported."""

    type: Name
    text: Text | None = None
    refusal: Text | None = None


class MessageItem(OpenAIModel):
    """A message of the conversation (``EasyInputMessage`` or ``InputMessage``)."""

    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: Text | Annotated[list[ContentPart], Field(max_length=MAX_CONTENT_PARTS)]
    id: Name | None = None


class FunctionCallItem(OpenAIModel):
    """A call the assistant made earlier (from a previous response's output)."""

    type: Literal["function_call"]
    call_id: Name
    name: Name
    arguments: Text
    id: Name | None = None


class FunctionCallOutputItem(OpenAIModel):
    """What a function call returned."""

    type: Literal["function_call_output"]
    call_id: Name
    output: Text | Annotated[list[ContentPart], Field(max_length=MAX_CONTENT_PARTS)]
    id: Name | None = None


InputItem = MessageItem | FunctionCallItem | FunctionCallOutputItem
_ITEM_MODELS: dict[str, type[BaseModel]] = {
    "message": MessageItem,
    "function_call": FunctionCallItem,
    "function_call_output": FunctionCallOutputItem,
}


class FunctionTool(FunctionDefinition):
    """A function tool, flat as the Responses API writes it (no ``function`` wrapper)."""

    type: Literal["function"]


class TextFormat(OpenAIModel):
    """``text.format``: ``text``, ``json_object`` or ``json_schema`` (name, schema, strict)."""

    type: Literal["text", "json_object", "json_schema"]
    name: Name | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None
    description: str | None = Field(None, max_length=16 * 1024)


class TextConfig(OpenAIModel):
    """``text``: the output's format and verbosity."""

    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ReasoningConfig(OpenAIModel):
    """``reasoning``: refused unless empty (no model here reasons)."""

    effort: Name | None = None
    summary: Name | None = None
    generate_summary: Name | None = None


Metadata = Annotated[
    dict[
        Annotated[str, Field(max_length=MAX_METADATA_KEY_CHARS)],
        Annotated[str, Field(max_length=MAX_METADATA_VALUE_CHARS)],
    ],
    Field(max_length=MAX_METADATA_PAIRS),
]


class CreateResponseRequest(OpenAIModel):
    """A ``POST /v1/responses`` body; ``input`` items and ``tools`` are checked one by one."""

    model: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    input: Text | Annotated[list[Any], Field(max_length=MAX_INPUT_ITEMS)] | None = None
    instructions: Text | None = None
    tools: Annotated[list[Any], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    # Ollama's: how long the model stays loaded after this request (docs/fleet.md).
    keep_alive: RequestKeepAlive = None
    text: TextConfig | None = None
    max_output_tokens: MaxTokens | None = None
    max_tool_calls: int | None = Field(None, ge=1, le=MAX_TOOLS)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_logprobs: int | None = Field(None, ge=0, le=20)
    stream: StrictBool = False
    stream_options: dict[str, Any] | None = None
    metadata: Metadata | None = None
    store: bool | None = None
    previous_response_id: Name | None = None
    user: Name | None = None
    safety_identifier: Name | None = None
    prompt_cache_key: Name | None = None
    prompt_cache_retention: Name | None = None
    service_tier: Name | None = None
    truncation: Literal["disabled", "auto"] | None = None
    background: bool | None = None
    reasoning: ReasoningConfig | None = None
    include: Annotated[list[Name], Field(max_length=MAX_INCLUDE)] | None = None
    prompt: Any = None
    conversation: Any = None
    # Extensions, as chat completions accepts them.
    seed: int | None = Field(None, ge=MIN_SEED, le=MAX_SEED)
    priority: StrictInt = Field(0, ge=-MAX_PRIORITY, le=MAX_PRIORITY)

    @property
    def logprobs_requested(self) -> int | None:
        """Alternatives per token to report with the output text (0: only the sampled
        token's), None for no logprobs: asked by ``include`` or by ``top_logprobs``."""
        if LOGPROBS_INCLUDE in (self.include or ()) or self.top_logprobs:
            return self.top_logprobs or 0
        return None

    def refuse_unsupported(self) -> None:
        """400 naming the first field asking for what no model here can do."""
        refusals: list[tuple[str, bool, str]] = [
            ("background", bool(self.background), "background responses are not supported"),
            ("prompt", self.prompt is not None, "stored prompt templates are not supported"),
            (
                "conversation",
                self.conversation is not None,
                "conversations are not supported; use previous_response_id",
            ),
            (
                "truncation",
                self.truncation == "auto",
                "'auto' truncation is not supported; only 'disabled'",
            ),
        ]
        if self.reasoning is not None:
            for name in ("effort", "summary", "generate_summary"):
                refusals.append(
                    (
                        f"reasoning.{name}",
                        getattr(self.reasoning, name) is not None,
                        "the model does not reason; reasoning options cannot be honoured",
                    )
                )
        if self.text is not None and self.text.verbosity not in (None, "medium"):
            refusals.append(("text.verbosity", True, "only 'medium' verbosity is supported"))
        for index, value in enumerate(self.include or ()):
            if value not in SUPPORTED_INCLUDES:
                refusals.append((f"include.{index}", True, f"{value!r} cannot be included"))
        for param, refused, why in refusals:
            if refused:
                raise InvalidRequestError(f"{param}: {why}", param=param, code="unsupported")


def parse_item(item: Any, index: int) -> InputItem:
    """One ``input`` item, checked; 400 naming ``input.{index}...``."""
    where = f"input.{index}"
    if not isinstance(item, dict):
        raise InvalidRequestError(f"{where}: must be an object", param=where)
    kind = item.get("type", "message")
    model = _ITEM_MODELS.get(kind) if isinstance(kind, str) else None
    if model is None:
        shown = kind if isinstance(kind, str) else type(kind).__name__
        raise InvalidRequestError(
            f"{where}.type: {shown[:64]!r} items are not supported; input items are messages, "
            "function_call and function_call_output",
            param=f"{where}.type",
            code="unsupported",
        )
    parsed = _validate(model, item, where)
    assert isinstance(parsed, MessageItem | FunctionCallItem | FunctionCallOutputItem)
    return parsed


def parse_tool(tool: Any, index: int) -> FunctionTool:
    """One ``tools`` entry; a built-in tool (``web_search``, ``file_search``, ...) is a 400
    naming its type."""
    where = f"tools.{index}"
    if not isinstance(tool, dict):
        raise InvalidRequestError(f"{where}: must be an object", param=where)
    kind = tool.get("type")
    if kind != "function":
        shown = kind[:64] if isinstance(kind, str) else type(kind).__name__
        raise InvalidRequestError(
            f"{where}.type: the built-in tool {shown!r} is not supported; only function tools are",
            param=f"{where}.type",
            code="unsupported",
        )
    return _validate(FunctionTool, tool, where)


def _validate(model: type[ItemT], value: dict[str, Any], where: str) -> ItemT:
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        inner = validation_error(exc, value)
        param = f"{where}.{inner.param}" if inner.param else where
        message = inner.message if inner.param else f"{where}: {inner.message}"
        raise InvalidRequestError(
            message.replace(f"{inner.param}:", f"{param}:", 1) if inner.param else message,
            param=param,
        ) from None
