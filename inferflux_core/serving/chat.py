"""OpenAI chat completions on the engine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from inferflux_core.engine.requests import GenerationRequest
from inferflux_core.engine.stream import RequestStream
from inferflux_core.protocol.chat import ChatCompletionRequest
from inferflux_core.protocol.common import parse_body
from inferflux_core.serving.common import (
    Service,
    Usage,
    collect_all,
    merge,
    raise_if_failed,
    usage,
    worst_case,
)
from inferflux_core.serving.logprobs import TokenBytes, chat_logprobs
from inferflux_core.structured import response_format_grammar
from inferflux_core.tools import (
    ChoiceOutput,
    ToolPlan,
    chat_message,
    conversation_text,
    plan_tools,
    render_prompt,
)

if TYPE_CHECKING:
    from inferflux_core.engine.model import LoadedModel


class ChatService(Service):
    """``chat.completion`` and ``chat.completion.chunk`` objects from request bodies."""

    object_prefix = "chatcmpl"

    def _prepare(
        self, body: Any
    ) -> tuple[ChatCompletionRequest, LoadedModel, ToolPlan, GenerationRequest]:
        """The checked request, its model, tool plan and engine request: schema checks,
        grammar, template and tokenizer, all CPU work (it runs in the worker pool)."""
        request = parse_body(ChatCompletionRequest, body)
        request.refuse_request_template()
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
            model,
            request,
            tokens,
            request.requested_max_tokens,
            grammar,
            request.logprobs_requested,
        )
        return request, model, tools, generation

    async def _submit(
        self, body: Any, usage_meter: Usage
    ) -> tuple[ChatCompletionRequest, ToolPlan, list[RequestStream], TokenBytes]:
        """Prepare in the worker pool, then submit the request's ``n`` choices from the event
        loop; also returns the tool plan and the model's ``token_bytes``."""
        request, model, tools, generation = await self.pool.run(self._prepare, body)
        usage_meter.reserve(worst_case([generation], request.n))
        streams = self.submit_choices(model, generation, request.n)
        usage_meter.per_prompt = request.n
        for index, stream in enumerate(streams):
            usage_meter.update(index, stream.n_prompt_tokens, 0)
        return request, tools, streams, model.backend.token_bytes

    async def input_text(self, body: Any) -> str:
        """The conversation's text as guardrails and the audit log see it: each message's
        content and the tool definitions, joined by newlines (400 if the body is invalid)."""
        return await self.pool.run(_conversation_text, body)

    async def create(self, body: Any, usage_meter: Usage | None = None) -> dict[str, Any]:
        """A complete ``chat.completion``; ``usage_meter`` is kept up to date."""
        usage_meter = usage_meter or Usage()
        request, tools, streams, token_bytes = await self._submit(body, usage_meter)
        results = await collect_all(streams, usage_meter)
        messages = []
        for index, result in enumerate(results):
            usage_meter.update(index, result.n_prompt_tokens, result.n_generated_tokens)
            messages.append(chat_message(tools, result.text, result.finish_reason))
        return {
            "id": streams[0].request_id,
            "object": "chat.completion",
            "created": self.created(),
            "model": request.model,
            "choices": [
                {
                    "index": index,
                    "message": message,
                    "logprobs": (
                        chat_logprobs(token_bytes, result.logprobs) if request.logprobs else None
                    ),
                    "finish_reason": finish_reason,
                }
                for index, (result, (message, finish_reason)) in enumerate(
                    zip(results, messages, strict=True)
                )
            ],
            "usage": usage(usage_meter.prompt_tokens, usage_meter.completion_tokens),
        }

    async def open_stream(
        self, body: Any, usage_meter: Usage | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Submit now (errors raise here, before any byte is sent); iterate for chunks.

        ``usage_meter`` is kept up to date as events arrive.
        """
        usage_meter = usage_meter or Usage()
        request, tools, streams, token_bytes = await self._submit(body, usage_meter)
        outputs = [ChoiceOutput(tools) for _ in streams]
        return self._chunks(request, outputs, streams, token_bytes, usage_meter)

    async def _chunks(
        self,
        request: ChatCompletionRequest,
        outputs: list[ChoiceOutput],
        streams: list[RequestStream],
        token_bytes: TokenBytes,
        usage_meter: Usage,
    ) -> AsyncIterator[dict[str, Any]]:
        created = self.created()
        include_usage = request.include_usage
        request_id = streams[0].request_id

        def chunk(
            index: int,
            delta: dict[str, Any],
            finish: str | None = None,
            logprobs: dict[str, Any] | None = None,
        ) -> dict[str, Any]:
            out: dict[str, Any] = {
                "id": request_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": request.model,
                "choices": [
                    {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
                ],
            }
            if include_usage:
                out["usage"] = None
            return out

        try:  # a client gone before the first event must free its sequences too
            for index in range(len(streams)):
                yield chunk(index, {"role": "assistant", "content": ""})
        except BaseException:
            for stream in streams:
                stream.cancel()
            raise
        async for index, event in merge(streams):
            usage_meter.update(index, event.n_prompt_tokens, event.n_generated_tokens)
            output = outputs[index]
            deltas = output.push(event.text)
            if event.logprobs and not deltas:
                deltas = [{"content": ""}]
            for position, delta in enumerate(deltas):
                logprobs = None
                if request.logprobs and position == 0:
                    logprobs = chat_logprobs(token_bytes, event.logprobs)
                yield chunk(index, delta, logprobs=logprobs)
            if event.finish_reason is not None:
                raise_if_failed(event)
                for delta in output.finish():
                    yield chunk(index, delta)
                yield chunk(index, {}, output.finish_reason(event.finish_reason))
        if include_usage:
            yield {
                "id": request_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": request.model,
                "choices": [],
                "usage": usage(usage_meter.prompt_tokens, usage_meter.completion_tokens),
            }


def _conversation_text(body: Any) -> str:
    return conversation_text(parse_body(ChatCompletionRequest, body))
