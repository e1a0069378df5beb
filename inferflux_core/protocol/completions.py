"""``POST /v1/completions`` request body."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from inferflux_core.errors import InvalidRequestError
from inferflux_core.protocol.common import (
    MAX_TOKEN_IDS,
    MaxTokens,
    SamplingFields,
    Text,
    TokenIds,
)

MAX_LOGPROBS = 5
MAX_BEST_OF = 20
#: Prompts in one request.
MAX_PROMPTS = 64
#: Sequences one request may queue: prompts times ``best_of`` (or ``n``).
MAX_SEQUENCES = 128


class CompletionRequest(SamplingFields):
    """A text completion request; ``prompt`` is text, token ids, or a list of either."""

    prompt: Text | list[Text] | TokenIds | list[TokenIds]
    max_tokens: MaxTokens | None = 16
    echo: bool = False
    suffix: Text | None = None
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    best_of: int | None = Field(None, ge=1, le=MAX_BEST_OF)

    @field_validator("prompt", mode="before")
    @classmethod
    def _bounded(cls, prompt: Any) -> Any:
        """At most :data:`MAX_PROMPTS` prompts, or :data:`MAX_TOKEN_IDS` token ids; checked
        before the members are, so a long list is refused at once."""
        if isinstance(prompt, list) and prompt:
            if isinstance(prompt[0], str | list):
                if len(prompt) > MAX_PROMPTS:
                    raise ValueError(f"at most {MAX_PROMPTS} prompts per request")
            elif len(prompt) > MAX_TOKEN_IDS:
                raise ValueError(f"at most {MAX_TOKEN_IDS} token ids in a prompt")
        return prompt

    def prompts(self) -> list[str | list[int]]:
        """Each prompt: a string or a list of token ids."""
        prompt = self.prompt
        if isinstance(prompt, str):
            return [prompt]
        if prompt and all(isinstance(p, int) for p in prompt):
            return [list(prompt)]  # type: ignore[arg-type]
        return list(prompt)  # type: ignore[arg-type]

    @property
    def candidates(self) -> int:
        """Sequences to generate per prompt: ``best_of`` (at least ``n``), else ``n``.

        400 if ``best_of`` is below ``n``, or streamed, as OpenAI.
        """
        if self.best_of is None:
            return self.n
        if self.best_of < self.n:
            raise InvalidRequestError(
                f"best_of: must be at least n ({self.n}), not {self.best_of}", param="best_of"
            )
        if self.stream and self.best_of > 1:
            raise InvalidRequestError("best_of: cannot be used with stream", param="best_of")
        return self.best_of

    def check_sequences(self, n_prompts: int) -> None:
        """400 if the prompts times the candidates each exceed :data:`MAX_SEQUENCES`."""
        if n_prompts * self.candidates > MAX_SEQUENCES:
            param = "best_of" if self.best_of is not None else "n"
            raise InvalidRequestError(
                f"{param}: {n_prompts} prompts with {self.candidates} sequences each make "
                f"{n_prompts * self.candidates}; at most {MAX_SEQUENCES} per request",
                param=param,
            )
