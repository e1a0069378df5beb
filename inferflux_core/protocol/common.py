"""Request fields shared by the OpenAI endpoints, the bounds every client value is held to,
and turning validation errors into 400s.

Every bound here is listed in ``docs/api.md`` ("Request bounds"); a value outside one is a
400 whose ``param`` names the field (``messages.3.content``, ``top_logprobs``).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
)

from inferflux_core.contracts.generation import MAX_PRIORITY
from inferflux_core.errors import InvalidRequestError
from inferflux_core.keep_alive import RequestKeepAlive

MAX_STOP_STRINGS = 16
#: Characters in one stop string.
MAX_STOP_CHARS = 1024
#: Characters in one text: a message's content, a prompt, a suffix, an embedding input
#: (OpenAI's limit for a message's content).
MAX_TEXT_CHARS = 10 * 1024 * 1024
#: Characters in a short identifier: ``model``, ``user``, a message's ``name``, a tool call id.
MAX_NAME_CHARS = 256
#: Token ids in one list (a prompt, an embedding input, ``/detokenize``): no model's context
#: is longer (``models[].context_length`` is at most this).
MAX_TOKEN_IDS = 1 << 20
#: ``max_tokens`` at most; the real bound is the model's context length, which it is clamped to.
MAX_TOKENS_CEILING = 1 << 20
#: ``seed`` is any signed or unsigned 64-bit integer.
MIN_SEED = -(1 << 63)
MAX_SEED = (1 << 64) - 1
MAX_LOGIT_BIAS = 100
MAX_LOGIT_BIAS_ENTRIES = 1024
#: The largest token id ``logit_bias`` may name (the vocabulary check comes after).
MAX_TOKEN_ID = (1 << 31) - 1
MAX_TOP_K = 1 << 20
MAX_REPEAT_PENALTY = 10.0
_TOKEN_ID_KEY = re.compile(r"[0-9]{1,10}")

ModelT = TypeVar("ModelT", bound=BaseModel)

Name = Annotated[str, Field(max_length=MAX_NAME_CHARS)]
Text = Annotated[str, Field(max_length=MAX_TEXT_CHARS)]
TokenIds = Annotated[list[int], Field(max_length=MAX_TOKEN_IDS)]


def _max_tokens_ceiling(value: int | None) -> int | None:
    if value is not None and value > MAX_TOKENS_CEILING:
        raise ValueError(
            f"must be at most {MAX_TOKENS_CEILING}; the real bound is the model's context "
            "length (max_model_len in /v1/models) less the prompt's tokens"
        )
    return value


MaxTokens = Annotated[int, Field(ge=1), AfterValidator(_max_tokens_ceiling)]


class OpenAIModel(BaseModel):
    """Unknown fields are accepted and ignored, as OpenAI does; known ones are type-checked,
    and no float may be NaN or infinite."""

    model_config = ConfigDict(extra="ignore", strict=False, allow_inf_nan=False)


class StreamOptions(OpenAIModel):
    """``stream_options``."""

    include_usage: bool = False


class SamplingFields(OpenAIModel):
    """Sampling fields both endpoints accept, OpenAI's and the common extensions."""

    model: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    max_tokens: MaxTokens | None = None
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=128)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    stop: (
        Annotated[str, Field(max_length=MAX_STOP_CHARS)]
        | Annotated[
            list[Annotated[str, Field(max_length=MAX_STOP_CHARS)]],
            Field(max_length=MAX_STOP_STRINGS),
        ]
        | None
    ) = None
    seed: int | None = Field(None, ge=MIN_SEED, le=MAX_SEED)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    user: Name | None = None
    logit_bias: (
        Annotated[
            dict[str, Annotated[float, Field(ge=-MAX_LOGIT_BIAS, le=MAX_LOGIT_BIAS)]],
            Field(max_length=MAX_LOGIT_BIAS_ENTRIES),
        ]
        | None
    ) = None
    # Extensions that vLLM and llama.cpp's server accept too.
    top_k: int = Field(0, ge=0, le=MAX_TOP_K)
    min_p: float = Field(0.0, ge=0.0, le=1.0)
    repeat_penalty: float = Field(1.0, gt=0.0, le=MAX_REPEAT_PENALTY)
    ignore_eos: bool = False
    #: Draft tokens by prompt lookup (speculative decoding); unset: the model's default.
    speculative: StrictBool | None = None
    min_tokens: int = Field(0, ge=0, le=MAX_TOKENS_CEILING)
    priority: StrictInt = Field(0, ge=-MAX_PRIORITY, le=MAX_PRIORITY)
    # Ollama's: how long the model stays loaded after this request (docs/fleet.md).
    keep_alive: RequestKeepAlive = None
    #: A LoRA adapter of ``model`` (the same as ``model: "BASE:ADAPTER"``; docs/adapters.md).
    adapter: str | None = Field(None, max_length=64)

    @field_validator("logit_bias")
    @classmethod
    def _token_id_keys(cls, bias: dict[str, float] | None) -> dict[str, float] | None:
        """Keys are token ids written in decimal, within :data:`MAX_TOKEN_ID`."""
        for key in bias or ():
            if not _TOKEN_ID_KEY.fullmatch(key) or int(key) > MAX_TOKEN_ID:
                raise ValueError(f"{key[:32]!r} is not a token id (0..{MAX_TOKEN_ID})")
        return bias

    def stop_strings(self) -> tuple[str, ...]:
        """``stop`` as a tuple, empty strings left out."""
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
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
        raise validation_error(exc, body) from None


def validation_error(exc: ValidationError, body: Any) -> InvalidRequestError:
    """The 400 for pydantic's first error in validating ``body``; ``param`` is the field's
    dotted path in the body (``messages.3.content``).

    A union (``stop``: a string or a list) fails once per member; the member error that got
    deepest into the value is the one that says what is wrong.
    """
    errors = exc.errors(include_url=False)
    field = errors[0]["loc"][:1]
    error = max((e for e in errors if e["loc"][:1] == field), key=lambda e: len(e["loc"]))
    path = field_path(body, error["loc"], missing=error["type"] == "missing")
    message = error["msg"]
    if error["type"] == "missing":
        message = "this field is required"
    elif error["type"] == "value_error":
        message = str(error.get("ctx", {}).get("error", message))
    if not path:
        return InvalidRequestError(message)
    return InvalidRequestError(f"{path}: {message}", param=path)


def field_path(body: Any, loc: tuple[str | int, ...], *, missing: bool = False) -> str:
    """``loc`` as a dotted path of the keys and indexes found in ``body``, so without the
    names pydantic gives union members (``str``, ``list[int]``); a ``missing`` field's name
    is kept."""
    parts: list[str] = []
    node = body
    for position, part in enumerate(loc):
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_dict or in_list:
            node = node[part]
        elif not (missing and position == len(loc) - 1):
            continue
        parts.append(str(part))
    return ".".join(parts)


def reject_unsupported(fields: dict[str, Any]) -> None:
    """400 for features a request asks for that are not implemented, never silently ignored."""
    for name, value in fields.items():
        if value:
            raise InvalidRequestError(
                f"{name} is not supported yet", param=name, code="unsupported"
            )
