"""A typed :class:`~inferflux_core.contracts.InferenceRequest` as an OpenAI request body.

A conversation goes to ``/chat/completions``, a prompt to ``/completions``; both stream, with
a final usage chunk. Extensions OpenAI itself lacks (``top_k``, ``min_p``, ...) are sent only
when they differ from their neutral value, so a request that does not use them is accepted by
any OpenAI-compatible server.
"""

from __future__ import annotations

from typing import Any

from inferflux_core.contracts import (
    ChatMessage,
    GenerationOptions,
    InferenceRequest,
    OutputConstraint,
    ToolChoice,
)
from inferflux_core.errors import InvalidRequestError

#: Extensions to OpenAI's parameters that vLLM, llama.cpp's server and inferflux accept,
#: with the value that means "off" (not sent).
_EXTENSIONS = {
    "top_k": 0,
    "min_p": 0.0,
    "repeat_penalty": 1.0,
    "min_tokens": 0,
    "ignore_eos": False,
}


def request_path(request: InferenceRequest) -> str:
    """The endpoint, relative to the base URL: chat for messages, completions for a prompt."""
    return "/chat/completions" if request.messages is not None else "/completions"


def request_body(request: InferenceRequest, upstream_model: str) -> dict[str, Any]:
    """The streamed OpenAI request for ``request``, naming ``upstream_model``."""
    body: dict[str, Any] = {
        "model": upstream_model,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    body.update(_sampling(request.options))
    if request.messages is not None:
        body["messages"] = [_message(m) for m in request.messages]
        body.update(_chat_extras(request))
    else:
        body["prompt"] = _prompt(request)
        body.update(_completion_extras(request))
    return body


def _sampling(options: GenerationOptions) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "temperature": options.temperature,
        "top_p": options.top_p,
        "n": options.n,
    }
    if options.seed is not None:
        fields["seed"] = options.seed
    if options.presence_penalty:
        fields["presence_penalty"] = options.presence_penalty
    if options.frequency_penalty:
        fields["frequency_penalty"] = options.frequency_penalty
    if options.logit_bias:
        fields["logit_bias"] = {str(t): b for t, b in options.logit_bias.items()}
    if options.max_tokens is not None:
        fields["max_tokens"] = options.max_tokens
    if options.stop:
        fields["stop"] = list(options.stop)
    for name, neutral in _EXTENSIONS.items():
        value = getattr(options, name)
        if value != neutral:
            fields[name] = value
    return fields


def _message(message: ChatMessage) -> dict[str, Any]:
    wire: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.name is not None:
        wire["name"] = message.name
    if message.tool_calls:
        wire["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in message.tool_calls
        ]
    if message.tool_call_id is not None:
        wire["tool_call_id"] = message.tool_call_id
    return wire


def _chat_extras(request: InferenceRequest) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if request.options.logprobs is not None:
        fields["logprobs"] = True
        if request.options.logprobs:
            fields["top_logprobs"] = request.options.logprobs
    if request.tools:
        fields["tools"] = [
            {
                "type": "function",
                "function": {
                    key: value
                    for key, value in (
                        ("name", tool.name),
                        ("description", tool.description),
                        ("parameters", dict(tool.parameters) if tool.parameters else None),
                        ("strict", tool.strict or None),
                    )
                    if value is not None
                },
            }
            for tool in request.tools
        ]
        fields["tool_choice"] = _tool_choice(request.tool_choice)
        fields["parallel_tool_calls"] = request.parallel_tool_calls
    if request.constraint is not None:
        fields["response_format"] = _response_format(request.constraint)
    return fields


def _tool_choice(choice: ToolChoice) -> Any:
    if choice.mode == "function":
        return {"type": "function", "function": {"name": choice.name}}
    return choice.mode


def _response_format(constraint: OutputConstraint) -> dict[str, Any]:
    if constraint.kind == "json_object":
        return {"type": "json_object"}
    if constraint.kind == "json_schema":
        schema = dict(constraint.schema or {})
        return {"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}
    raise InvalidRequestError(
        f"{constraint.param}: this model's upstream does not take grammars",
        param=constraint.param,
        code="unsupported",
    )


def _prompt(request: InferenceRequest) -> str | list[int]:
    if isinstance(request.prompt, tuple):
        return list(request.prompt)
    return request.prompt or ""


def _completion_extras(request: InferenceRequest) -> dict[str, Any]:
    options = request.options
    fields: dict[str, Any] = {}
    if options.logprobs is not None:
        fields["logprobs"] = options.logprobs
    if options.echo:
        fields["echo"] = True
    if options.best_of is not None:
        fields["best_of"] = options.best_of
    if request.suffix is not None:
        fields["suffix"] = request.suffix
    if request.constraint is not None:
        fields["response_format"] = _response_format(request.constraint)
    return fields
