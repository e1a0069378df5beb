"""``POST /v1/completions`` request body."""

from __future__ import annotations

from pydantic import Field

from inferflux_core.errors import InvalidRequestError
from inferflux_core.protocol.common import SamplingFields

MAX_LOGPROBS = 5
MAX_BEST_OF = 20


class CompletionRequest(SamplingFields):
    """A text completion request; ``prompt`` is text, token ids, or a list of either."""

    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(16, ge=1)
    echo: bool = False
    suffix: str | None = None
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    best_of: int | None = Field(None, ge=1, le=MAX_BEST_OF)

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
