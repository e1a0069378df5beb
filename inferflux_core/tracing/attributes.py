"""The span attributes of a generation request: OpenTelemetry's ``gen_ai.*`` semantic
conventions, and the latency attributes vLLM sets on its request spans (``vllm/tracing.py``,
``SpanAttributes``), so a trace backend shows inferflux's and vLLM's spans alike."""

from __future__ import annotations

from collections.abc import Sequence

from inferflux_core.contracts.generation import InferenceRequest, UsageReport
from inferflux_core.tracing.timing import RequestTiming

AttributeValue = str | bool | int | float | Sequence[str]
Attributes = dict[str, AttributeValue]

OPERATION_NAME = "gen_ai.operation.name"
REQUEST_MODEL = "gen_ai.request.model"
REQUEST_ID = "gen_ai.request.id"
REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
REQUEST_TEMPERATURE = "gen_ai.request.temperature"
REQUEST_TOP_P = "gen_ai.request.top_p"
REQUEST_TOP_K = "gen_ai.request.top_k"
REQUEST_SEED = "gen_ai.request.seed"
REQUEST_N = "gen_ai.request.n"
RESPONSE_ID = "gen_ai.response.id"
RESPONSE_MODEL = "gen_ai.response.model"
RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
LATENCY_TIME_IN_QUEUE = "gen_ai.latency.time_in_queue"
LATENCY_TIME_TO_FIRST_TOKEN = "gen_ai.latency.time_to_first_token"
LATENCY_E2E = "gen_ai.latency.e2e"
LATENCY_TIME_IN_MODEL_PREFILL = "gen_ai.latency.time_in_model_prefill"
LATENCY_TIME_IN_MODEL_DECODE = "gen_ai.latency.time_in_model_decode"
ERROR_TYPE = "error.type"


def operation(request: InferenceRequest) -> str:
    """``chat`` for a conversation, ``text_completion`` for a prompt."""
    return "chat" if request.messages is not None else "text_completion"


def span_name(request: InferenceRequest) -> str:
    """``{gen_ai.operation.name} {gen_ai.request.model}``, as the conventions name it."""
    return f"{operation(request)} {request.model}"


def request_attributes(request: InferenceRequest) -> Attributes:
    """What the request asked for."""
    options = request.options
    attributes: Attributes = {
        OPERATION_NAME: operation(request),
        REQUEST_MODEL: request.model,
        REQUEST_ID: request.request_id,
        REQUEST_TEMPERATURE: options.temperature,
        REQUEST_TOP_P: options.top_p,
        REQUEST_N: options.n,
    }
    if options.max_tokens is not None:
        attributes[REQUEST_MAX_TOKENS] = options.max_tokens
    if options.top_k:
        attributes[REQUEST_TOP_K] = options.top_k
    if options.seed is not None:
        attributes[REQUEST_SEED] = options.seed
    return attributes


def response_attributes(
    request: InferenceRequest, usage: UsageReport | None, finish_reasons: Sequence[str]
) -> Attributes:
    """What the request got: the serving model, its id, usage and finish reasons."""
    attributes: Attributes = {RESPONSE_MODEL: request.model, RESPONSE_ID: request.request_id}
    if usage is not None:
        attributes[USAGE_INPUT_TOKENS] = usage.prompt_tokens
        attributes[USAGE_OUTPUT_TOKENS] = usage.completion_tokens
    if finish_reasons:
        attributes[RESPONSE_FINISH_REASONS] = tuple(finish_reasons)
    return attributes


def latency_attributes(timing: RequestTiming, started: float, ended: float) -> Attributes:
    """Seconds in each phase that was reached; time to first token and end to end from
    ``started`` (when the engine took the request) to the first token and to ``ended``."""
    attributes: Attributes = {LATENCY_E2E: max(0.0, ended - started)}
    if timing.first_token:
        attributes[LATENCY_TIME_TO_FIRST_TOKEN] = max(0.0, timing.first_token - started)
    if timing.submitted and timing.scheduled:
        attributes[LATENCY_TIME_IN_QUEUE] = max(0.0, timing.scheduled - timing.submitted)
    if timing.scheduled and timing.first_token:
        attributes[LATENCY_TIME_IN_MODEL_PREFILL] = max(0.0, timing.first_token - timing.scheduled)
    if timing.first_token and timing.finished:
        attributes[LATENCY_TIME_IN_MODEL_DECODE] = max(0.0, timing.finished - timing.first_token)
    return attributes
