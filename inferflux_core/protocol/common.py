"""Request fields shared by the OpenAI endpoints, and turning validation errors into 400s."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from inferflux_core.errors import InvalidRequestError

MAX_STOP_STRINGS = 16

ModelT = TypeVar("ModelT", bound=BaseModel)


class OpenAIModel(BaseModel):
    """Unknown fields are accepted and ignored, as OpenAI does; known ones are type-checked."""

    model_config = ConfigDict(extra="ignore", strict=False)


class StreamOptions(OpenAIModel):
    """``stream_options``."""

    include_usage: bool = False


class SamplingFields(OpenAIModel):
    """Sampling fields both endpoints accept, OpenAI's and the common extensions."""

    model: str = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=128)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    user: str | None = None
    logit_bias: dict[str, float] | None = None
    # Extensions that vLLM and llama.cpp's server accept too.
    top_k: int = Field(0, ge=0)
    min_p: float = Field(0.0, ge=0.0, le=1.0)
    repeat_penalty: float = Field(1.0, gt=0.0)
    ignore_eos: bool = False
    min_tokens: int = Field(0, ge=0)
    priority: int = 0

    def stop_strings(self) -> tuple[str, ...]:
        """``stop`` as a tuple, validated."""
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > MAX_STOP_STRINGS:
            raise InvalidRequestError(
                f"stop: at most {MAX_STOP_STRINGS} stop strings are allowed", param="stop"
            )
        return tuple(s for s in stops if s)

    @property
    def include_usage(self) -> bool:
        """Whether a streaming response ends with a usage chunk."""
        return bool(self.stream_options and self.stream_options.include_usage)


def parse_body(model: type[ModelT], body: Any) -> ModelT:
    """Validate a JSON body; a problem becomes a 400 naming the field."""
    if not isinstance(body, dict):
        raise InvalidRequestError("the request body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"])
        message = error["msg"]
        if error["type"] == "missing":
            message = "this field is required"
        raise InvalidRequestError(f"{field}: {message}", param=field) from None


def reject_unsupported(fields: dict[str, Any]) -> None:
    """400 for features a request asks for that are not implemented, never silently ignored."""
    for name, value in fields.items():
        if value:
            raise InvalidRequestError(
                f"{name} is not supported yet", param=name, code="unsupported"
            )
