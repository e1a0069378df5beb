"""``POST /v1/embeddings`` request body (OpenAI's shape)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StrictInt, StrictStr, TypeAdapter, ValidationError, field_validator

from inferflux_core.protocol.common import (
    MAX_NAME_CHARS,
    MAX_TEXT_CHARS,
    MAX_TOKEN_IDS,
    Name,
    OpenAIModel,
)

#: OpenAI's limit on inputs per request.
MAX_INPUTS = 2048
#: The largest ``dimensions`` asked for (the model's own size is the real bound).
MAX_DIMENSIONS = 1 << 16

_Text = Annotated[StrictStr, Field(max_length=MAX_TEXT_CHARS)]
_Tokens = Annotated[list[StrictInt], Field(max_length=MAX_TOKEN_IDS)]
EmbeddingInput = (
    _Text
    | Annotated[list[_Text], Field(max_length=MAX_INPUTS)]
    | _Tokens
    | Annotated[list[_Tokens], Field(max_length=MAX_INPUTS)]
)
_INPUT = TypeAdapter(EmbeddingInput)


class EmbeddingRequest(OpenAIModel):
    """Text or token ids to embed: one string or token list, or a list of either.

    ``dimensions`` shortens the vectors, for models configured with Matryoshka sizes;
    ``encoding_format: base64`` sends each vector as little-endian float32 bytes.
    """

    model: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    input: EmbeddingInput
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1, le=MAX_DIMENSIONS)
    user: Name | None = None

    @field_validator("input", mode="wrap")
    @classmethod
    def _one_shape(cls, value: object, handler: object) -> EmbeddingInput:
        """One message for every wrong shape, instead of one per member of the union; one
        for every input too long or too many."""
        try:
            return _INPUT.validate_python(value)
        except ValidationError as exc:
            if any(error["type"] == "too_long" for error in exc.errors()):
                raise ValueError(
                    f"at most {MAX_INPUTS} inputs, each at most {MAX_TEXT_CHARS} characters "
                    f"or {MAX_TOKEN_IDS} token ids"
                ) from None
            raise ValueError(
                "must be a string, a list of strings, a list of token ids, "
                "or a list of lists of token ids"
            ) from None

    def inputs(self) -> list[str | list[int]]:
        """Every input on its own: a string, or a list of token ids."""
        value = self.input
        if isinstance(value, str):
            return [value]
        if value and all(isinstance(item, int) for item in value):
            return [list(value)]  # type: ignore[arg-type]
        return list(value)  # type: ignore[arg-type]
