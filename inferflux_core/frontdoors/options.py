"""What the OpenAI generating endpoints share when parsing: sampling fields to options."""

from __future__ import annotations

from typing import Any

from inferflux_core.contracts.generation import DEFAULTABLE_SAMPLING, GenerationOptions
from inferflux_core.errors import InvalidRequestError
from inferflux_core.protocol.common import SamplingFields


def generation_options(
    fields: SamplingFields,
    *,
    max_tokens: int | None,
    logprobs: int | None = None,
    best_of: int | None = None,
    echo: bool = False,
) -> GenerationOptions:
    """The engine's options for a request's (already bounded) sampling fields."""
    return GenerationOptions(
        temperature=fields.temperature,
        top_p=fields.top_p,
        top_k=fields.top_k,
        min_p=fields.min_p,
        seed=fields.seed,
        repeat_penalty=fields.repeat_penalty,
        presence_penalty=fields.presence_penalty,
        frequency_penalty=fields.frequency_penalty,
        logit_bias={int(k): v for k, v in fields.logit_bias.items()} if fields.logit_bias else None,
        max_tokens=max_tokens,
        min_tokens=fields.min_tokens,
        ignore_eos=fields.ignore_eos,
        speculative=fields.speculative,
        stop=fields.stop_strings(),
        logprobs=logprobs,
        n=fields.n,
        best_of=best_of,
        echo=echo,
        unset=DEFAULTABLE_SAMPLING - fields.model_fields_set,
    )


def check_stream_flag(body: Any) -> None:
    """400 unless ``stream`` is absent, null or a JSON boolean (``"yes"`` is not one)."""
    stream = body.get("stream") if isinstance(body, dict) else None
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequestError("stream: must be a boolean", param="stream")
