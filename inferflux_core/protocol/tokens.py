"""``POST /tokenize`` and ``POST /detokenize`` request bodies (vLLM's shapes)."""

from __future__ import annotations

from pydantic import Field, model_validator

from inferflux_core.protocol.chat import MAX_MESSAGES, ChatMessage
from inferflux_core.protocol.common import MAX_NAME_CHARS, OpenAIModel, Text, TokenIds


class TokenizeRequest(OpenAIModel):
    """Text (``prompt``) or a conversation (``messages``, rendered by the chat template).

    ``add_special_tokens`` defaults to true for a prompt (BOS where the model wants one) and
    to false for messages (the template writes them), as vLLM does.
    """

    model: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    prompt: Text | None = None
    messages: list[ChatMessage] | None = Field(None, min_length=1, max_length=MAX_MESSAGES)
    add_special_tokens: bool | None = None
    add_generation_prompt: bool = True

    @model_validator(mode="after")
    def _one_input(self) -> TokenizeRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of 'prompt' and 'messages'")
        return self


class DetokenizeRequest(OpenAIModel):
    """Token ids to turn back into text."""

    model: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    tokens: TokenIds
