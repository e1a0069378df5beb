"""``POST /v1/messages`` and ``POST /v1/messages/count_tokens`` request bodies (Anthropic's
Messages API), checked and bounded.

Anthropic refuses a field it does not know; so do we, naming it, and also one it knows that
we cannot honour (server tools, ``container``, ``mcp_servers``, extended thinking). Fields
that only tune Anthropic's own service (``cache_control``, ``service_tier``, ...) are
accepted and have no effect. Content blocks are checked one by one by the front door
(:mod:`inferflux_core.frontdoors.anthropic_messages`), so that an image or a server tool's
result gets a 400 that says what is not supported.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator

from inferflux_core.contracts.generation import MAX_PRIORITY
from inferflux_core.errors import InvalidRequestError
from inferflux_core.keep_alive import RequestKeepAlive
from inferflux_core.protocol.common import (
    MAX_NAME_CHARS,
    MAX_STOP_CHARS,
    MAX_STOP_STRINGS,
    MAX_TOP_K,
    MaxTokens,
    Name,
    Text,
)
from inferflux_core.protocol.tools import MAX_PARAMETERS_DEPTH, MAX_TOOLS
from inferflux_core.structured.limits import nesting_depth

#: Messages in one request (the body's size limit is usually the tighter bound).
MAX_MESSAGES = 10_000
#: Content blocks in one message, or in one tool result.
MAX_BLOCKS = 1024
#: Tool names: Anthropic's characters; at most 64 of them, as the tool-call parser reads.
TOOL_NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"

#: Fields Anthropic knows that we cannot honour, with what to say about each.
UNSUPPORTED_FIELDS = {
    "container": "containers (code execution) are not supported",
    "mcp_servers": "MCP servers are not supported; run the MCP client on your side",
    "context_management": "context management is not supported",
    "inference_geo": "inference_geo is not supported",
    "user_profile_id": "user_profile_id is not supported",
    "workspace_id": "workspace_id is not supported",
}


class AnthropicModel(BaseModel):
    """Unknown fields are refused (as Anthropic does); no float may be NaN or infinite."""

    model_config = ConfigDict(extra="forbid", strict=False, allow_inf_nan=False)


class Block(BaseModel):
    """A content block as sent: its ``type`` and the rest, checked by the front door."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    type: Name


class TextBlock(AnthropicModel):
    """``{"type": "text", "text": ...}``; ``cache_control`` and ``citations`` have no effect."""

    type: Literal["text"]
    text: Text
    cache_control: dict[str, Any] | None = None
    citations: list[Any] | None = None


BlockList = Annotated[list[Block], Field(max_length=MAX_BLOCKS)]


class ToolUseBlock(AnthropicModel):
    """A tool the assistant called earlier: ``input`` is its arguments object."""

    type: Literal["tool_use"]
    id: Name
    name: Name
    input: dict[str, Any]
    cache_control: dict[str, Any] | None = None
    caller: dict[str, Any] | None = None


class ToolResultBlock(AnthropicModel):
    """The result of an earlier tool call: text, or text blocks; ``is_error`` says it failed."""

    type: Literal["tool_result"]
    tool_use_id: Name
    content: Text | BlockList | None = None
    is_error: StrictBool = False
    cache_control: dict[str, Any] | None = None


class Message(AnthropicModel):
    """One turn: a string, or content blocks."""

    role: Literal["user", "assistant", "system"]
    content: Text | BlockList


class ToolDefinition(AnthropicModel):
    """A client tool; ``input_schema`` is the JSON Schema of its input."""

    name: str = Field(pattern=TOOL_NAME_PATTERN)
    input_schema: dict[str, Any]
    description: Text | None = None
    type: Literal["custom"] | None = None
    strict: StrictBool | None = None
    cache_control: dict[str, Any] | None = None
    # Hints for Anthropic's own tool search and streaming; nothing to do here.
    defer_loading: StrictBool | None = None
    eager_input_streaming: StrictBool | None = None
    input_examples: list[dict[str, Any]] | None = None
    allowed_callers: list[str] | None = None

    @field_validator("input_schema")
    @classmethod
    def _shallow(cls, schema: dict[str, Any]) -> dict[str, Any]:
        if nesting_depth(schema) > MAX_PARAMETERS_DEPTH:
            raise ValueError(f"nested deeper than {MAX_PARAMETERS_DEPTH} levels")
        return schema


class ToolChoice(AnthropicModel):
    """``tool_choice``: ``auto``, ``any``, ``tool`` (with ``name``) or ``none``."""

    type: Literal["auto", "any", "tool", "none"]
    name: Name | None = None
    disable_parallel_tool_use: StrictBool | None = None


class Metadata(AnthropicModel):
    """``metadata``: an opaque id of the end user (kept for nobody; Anthropic's abuse checks)."""

    user_id: Name | None = None


class OutputFormat(AnthropicModel):
    """``output_config.format``: the answer is JSON valid against ``schema``."""

    type: Literal["json_schema"]
    json_schema: dict[str, Any] = Field(alias="schema")


class OutputConfig(AnthropicModel):
    """``output_config``: ``format`` is enforced by a grammar; ``effort`` needs a reasoning
    model, which none here is, so only null is accepted."""

    format: OutputFormat | None = None
    effort: Name | None = None


class Thinking(BaseModel):
    """``thinking``: only ``{"type": "disabled"}`` can be honoured."""

    model_config = ConfigDict(extra="allow")

    type: Name


StopSequence = Annotated[str, Field(max_length=MAX_STOP_CHARS)]


class ConversationFields(AnthropicModel):
    """What both routes take: the conversation and the tools it may call."""

    model: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    system: Text | Annotated[list[TextBlock], Field(max_length=MAX_BLOCKS)] | None = None
    tools: list[dict[str, Any]] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    output_config: OutputConfig | None = None
    # Tuning of Anthropic's own service, accepted without effect.
    cache_control: dict[str, Any] | None = None
    service_tier: Literal["auto", "standard_only"] | None = None
    diagnostics: dict[str, Any] | None = None
    speed: Literal["standard"] | None = None

    @classmethod
    def refuse_unsupported(cls, body: dict[str, Any]) -> None:
        """400 naming the first field we cannot honour (before pydantic names it unknown)."""
        for name, why in UNSUPPORTED_FIELDS.items():
            if body.get(name) is not None:
                raise InvalidRequestError(f"{name}: {why}", param=name, code="unsupported")
        config = body.get("output_config")
        if isinstance(config, dict) and config.get("effort") is not None:
            raise InvalidRequestError(
                "output_config.effort: effort is not supported (no model here reasons)",
                param="output_config.effort",
                code="unsupported",
            )
        thinking = body.get("thinking")
        if isinstance(thinking, dict) and thinking.get("type") not in (None, "disabled"):
            raise InvalidRequestError(
                f"thinking: {thinking.get('type')!r} thinking is not supported; omit it or send "
                '{"type": "disabled"}',
                param="thinking.type",
                code="unsupported",
            )


class MessagesRequest(ConversationFields):
    """``POST /v1/messages``."""

    max_tokens: MaxTokens
    stop_sequences: Annotated[list[StopSequence], Field(max_length=MAX_STOP_STRINGS)] | None = None
    temperature: float = Field(1.0, ge=0.0, le=1.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0, le=MAX_TOP_K)
    metadata: Metadata | None = None
    stream: StrictBool = False
    # inferflux's extensions, as on the OpenAI routes.
    priority: StrictInt = Field(0, ge=-MAX_PRIORITY, le=MAX_PRIORITY)
    keep_alive: RequestKeepAlive = None


class CountTokensRequest(ConversationFields):
    """``POST /v1/messages/count_tokens``: the conversation without the sampling fields."""
