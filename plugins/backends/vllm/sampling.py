"""A typed request's sampling and output constraint as vLLM's ``SamplingParams``.

Every field of :class:`~inferflux_core.contracts.GenerationOptions` is mapped; one vLLM
cannot serve is a 400 naming it, never dropped. ``vllm`` is passed in (the module imported by
the backend), so this module imports without vLLM installed.
"""

from __future__ import annotations

from typing import Any

from inferflux_core.contracts import GenerationOptions, InferenceRequest, OutputConstraint
from inferflux_core.errors import ContextLengthError, InvalidRequestError


def max_new_tokens(options: GenerationOptions, prompt_tokens: int, max_model_len: int) -> int:
    """Tokens the request may generate: its ``max_tokens``, at most what the context leaves."""
    room = max_model_len - prompt_tokens
    if room < 1:
        raise ContextLengthError(
            f"the prompt has {prompt_tokens} tokens and the model's context is "
            f"{max_model_len}: no room to generate",
            param="messages",
            code="context_length_exceeded",
        )
    return room if options.max_tokens is None else min(options.max_tokens, room)


def refuse_unsupported(request: InferenceRequest) -> None:
    """400 naming the first field vLLM's engine cannot serve."""
    options = request.options
    if options.best_of is not None and options.best_of > options.n:
        raise InvalidRequestError(
            "best_of: vLLM's v1 engine does not support best_of greater than n",
            param="best_of",
            code="unsupported",
        )
    if options.echo:
        raise InvalidRequestError(
            "echo: the vllm backend does not echo the prompt", param="echo", code="unsupported"
        )
    if request.suffix is not None:
        raise InvalidRequestError(
            "suffix: the vllm backend does not fill in the middle",
            param="suffix",
            code="unsupported",
        )


def sampling_params(
    vllm: Any, request: InferenceRequest, prompt_tokens: int, max_model_len: int
) -> Any:
    """``request``'s ``vllm.SamplingParams`` (outputs streamed as deltas)."""
    refuse_unsupported(request)
    options = request.options
    from vllm.sampling_params import RequestOutputKind

    greedy = options.temperature <= 0.0
    # vLLM refuses n > 1 with temperature 0; top_k 1 samples the argmax just the same.
    several_greedy = greedy and options.n > 1
    fields: dict[str, Any] = {
        "n": options.n,
        "temperature": 1.0 if several_greedy else 0.0 if greedy else options.temperature,
        "top_p": options.top_p,
        "top_k": 1 if several_greedy else max(options.top_k, 0),
        "min_p": options.min_p,
        "seed": options.seed,
        "presence_penalty": options.presence_penalty,
        "frequency_penalty": options.frequency_penalty,
        "repetition_penalty": options.repeat_penalty,
        "logit_bias": dict(options.logit_bias) if options.logit_bias else None,
        "stop": list(options.stop) or None,
        "max_tokens": max_new_tokens(options, prompt_tokens, max_model_len),
        "min_tokens": options.min_tokens,
        "ignore_eos": options.ignore_eos,
        "logprobs": options.logprobs,
        "output_kind": RequestOutputKind.DELTA,
        "structured_outputs": structured_outputs(vllm, request.constraint),
    }
    try:
        return vllm.SamplingParams(**fields)
    except Exception as exc:  # vLLM's VLLMValidationError, ValueError, TypeError
        param = getattr(exc, "parameter", None)
        raise InvalidRequestError(
            f"vLLM refused the sampling parameters: {str(exc)[:1000]}", param=param
        ) from None


def structured_outputs(vllm: Any, constraint: OutputConstraint | None) -> Any:
    """vLLM's ``StructuredOutputsParams`` for ``constraint`` (None without one)."""
    if constraint is None:
        return None
    from vllm.sampling_params import StructuredOutputsParams

    if constraint.kind == "grammar":
        return StructuredOutputsParams(grammar=constraint.grammar)
    if constraint.kind == "json_schema" and constraint.schema is not None:
        return StructuredOutputsParams(json=dict(constraint.schema))
    return StructuredOutputsParams(json_object=True)
