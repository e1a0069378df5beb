"""OpenAI chat completions on the engine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from inferflux_core.engine.stream import RequestStream
from inferflux_core.protocol.chat import ChatCompletionRequest
from inferflux_core.protocol.common import parse_body, reject_unsupported
from inferflux_core.serving.common import Service, Usage, collect, raise_if_failed, usage
from inferflux_core.structured import response_format_grammar
from inferflux_core.tools import (
    ChoiceOutput,
    ToolPlan,
    chat_message,
    conversation_text,
    plan_tools,
    render_prompt,
)


class ChatService(Service):
    """``chat.completion`` and ``chat.completion.chunk`` objects from request bodies."""

    object_prefix = "chatcmpl"

    def _submit(
        self, body: Any, usage_meter: Usage
    ) -> tuple[ChatCompletionRequest, ToolPlan, RequestStream]:
        request = parse_body(ChatCompletionRequest, body)
        request.refuse_request_template()
        reject_unsupported({"logprobs": request.logprobs})
        model = self.engine.model(request.model)
        tools = plan_tools(request, model.backend)
        grammar = tools.grammar or response_format_grammar(
            request.response_format,
            model.backend,
            ignore_eos=request.ignore_eos,
            min_tokens=request.min_tokens,
        )
        tokens = model.tokenize_prompt(render_prompt(model, request, tools))
        generation = self.generation_request(
            model, request, tokens, request.requested_max_tokens, grammar
        )
        stream = self.engine.submit(model.name, generation)
        usage_meter.update(0, stream.n_prompt_tokens, 0)
        return request, tools, stream

    def input_text(self, body: Any) -> str:
        """The conversation's text as guardrails and the audit log see it: each message's
        content and the tool definitions, joined by newlines (400 if the body is invalid)."""
        return conversation_text(parse_body(ChatCompletionRequest, body))

    async def create(self, body: Any, usage_meter: Usage | None = None) -> dict[str, Any]:
        """A complete ``chat.completion``; ``usage_meter`` is kept up to date."""
        usage_meter = usage_meter or Usage()
        request, tools, stream = self._submit(body, usage_meter)
        result = await collect(stream)
        usage_meter.update(0, result.n_prompt_tokens, result.n_generated_tokens)
        message, finish_reason = chat_message(tools, result.text, result.finish_reason)
        return {
            "id": stream.request_id,
            "object": "chat.completion",
            "created": self.created(),
            "model": request.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
            "usage": usage(result.n_prompt_tokens, result.n_generated_tokens),
        }

    def open_stream(
        self, body: Any, usage_meter: Usage | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Submit now (errors raise here, before any byte is sent); iterate for chunks.

        ``usage_meter`` is kept up to date as events arrive.
        """
        usage_meter = usage_meter or Usage()
        request, tools, stream = self._submit(body, usage_meter)
        return self._chunks(request, ChoiceOutput(tools), stream, usage_meter)

    async def _chunks(
        self,
        request: ChatCompletionRequest,
        output: ChoiceOutput,
        stream: RequestStream,
        usage_meter: Usage,
    ) -> AsyncIterator[dict[str, Any]]:
        created = self.created()
        include_usage = request.include_usage

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            out: dict[str, Any] = {
                "id": stream.request_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": request.model,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
            if include_usage:
                out["usage"] = None
            return out

        yield chunk({"role": "assistant", "content": ""})
        async for event in stream:
            usage_meter.update(0, event.n_prompt_tokens, event.n_generated_tokens)
            for delta in output.push(event.text):
                yield chunk(delta)
            if event.finish_reason is not None:
                raise_if_failed(event)
                for delta in output.finish():
                    yield chunk(delta)
                yield chunk({}, output.finish_reason(event.finish_reason))
                if include_usage:
                    yield {
                        "id": stream.request_id,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": request.model,
                        "choices": [],
                        "usage": usage(event.n_prompt_tokens, event.n_generated_tokens),
                    }
