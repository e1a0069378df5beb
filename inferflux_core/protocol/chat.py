"""``POST /v1/chat/completions`` request body."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StrictBool

from inferflux_core.errors import InvalidRequestError
from inferflux_core.protocol.common import MaxTokens, Name, OpenAIModel, SamplingFields, Text
from inferflux_core.protocol.tools import MAX_TOOLS, ToolCall, ToolDefinition

MAX_TOP_LOGPROBS = 20
MAX_MESSAGES = 2048
MAX_CONTENT_PARTS = 256
MAX_TOOL_CALLS = 128


class TextPart(OpenAIModel):
    """A content part; only text is supported."""

    type: Name
    text: Text | None = None


class ChatMessage(OpenAIModel):
    """One message of the conversation."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Text | Annotated[list[TextPart], Field(max_length=MAX_CONTENT_PARTS)] | None = None
    name: Name | None = None
    tool_call_id: Name | None = None
    tool_calls: Annotated[list[ToolCall], Field(max_length=MAX_TOOL_CALLS)] | None = None

    def text(self, index: int) -> str:
        """The message's text; 400 for non-text parts."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        pieces = []
        for j, part in enumerate(self.content):
            if part.type != "text" or part.text is None:
                raise InvalidRequestError(
                    f"messages.{index}.content.{j}: only text content parts are supported",
                    param=f"messages.{index}.content.{j}.type",
                )
            pieces.append(part.text)
        return "".join(pieces)


class ChatCompletionRequest(SamplingFields):
    """A chat completion request."""

    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: MaxTokens | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    response_format: dict[str, Any] | None = None
    tools: list[ToolDefinition] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    chat_template: Any = None
    #: vLLM's extension: continue the final assistant message instead of starting a new one.
    continue_final_message: StrictBool = False

    def refuse_request_template(self) -> None:
        """Templates run code; they come from the model file or the operator, never a client."""
        if self.chat_template is not None:
            raise InvalidRequestError(
                "chat_template: a chat template is not accepted in a request; the operator can "
                "set models[].chat_template in the server's configuration",
                param="chat_template",
            )

    @property
    def logprobs_requested(self) -> int | None:
        """Alternatives per token to report (0: only the sampled token's), None for none;
        400 for ``top_logprobs`` without ``logprobs``, as OpenAI."""
        if not self.logprobs:
            if self.top_logprobs is not None:
                raise InvalidRequestError(
                    "top_logprobs: needs logprobs set to true", param="top_logprobs"
                )
            return None
        return self.top_logprobs or 0

    @property
    def requested_max_tokens(self) -> int | None:
        """``max_completion_tokens`` or, failing that, ``max_tokens``."""
        return self.max_completion_tokens or self.max_tokens
