"""OpenAI request bodies as pydantic models, one module per endpoint."""

from inferflux_core.protocol.chat import ChatCompletionRequest, ChatMessage
from inferflux_core.protocol.common import parse_body
from inferflux_core.protocol.completions import CompletionRequest

__all__ = ["ChatCompletionRequest", "ChatMessage", "CompletionRequest", "parse_body"]
