"""OpenAI chat completions on the engine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from inferflux_core.engine.stream import RequestStream
from inferflux_core.protocol.chat import ChatCompletionRequest
from inferflux_core.protocol.common import parse_body, reject_unsupported
from inferflux_core.serving.common import Service, collect, raise_if_failed, usage


class ChatService(Service):
    """``chat.completion`` and ``chat.completion.chunk`` objects from request bodies."""

    object_prefix = "chatcmpl"

    def _submit(self, body: Any) -> tuple[ChatCompletionRequest, RequestStream]:
        request = parse_body(ChatCompletionRequest, body)
        request.refuse_request_template()
        reject_unsupported(
            {
                "tools": request.tools,
                "response_format": request.response_format
                and request.response_format.get("type") != "text",
                "logprobs": request.logprobs,
                "logit_bias": request.logit_bias,
            }
        )
        model = self.engine.model(request.model)
        prompt = model.render_chat(request.template_messages(), add_generation_prompt=True)
        tokens = model.tokenize_prompt(prompt)
        generation = self.generation_request(model, request, tokens, request.requested_max_tokens)
        return request, self.engine.submit(model.name, generation)

    async def create(self, body: Any) -> dict[str, Any]:
        """A complete ``chat.completion``."""
        request, stream = self._submit(body)
        result = await collect(stream)
        return {
            "id": stream.request_id,
            "object": "chat.completion",
            "created": self.created(),
            "model": request.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": result.text},
                    "logprobs": None,
                    "finish_reason": result.finish_reason,
                }
            ],
            "usage": usage(result.n_prompt_tokens, result.n_generated_tokens),
        }

    def open_stream(self, body: Any) -> AsyncIterator[dict[str, Any]]:
        """Submit now (errors raise here, before any byte is sent); iterate for chunks."""
        request, stream = self._submit(body)
        return self._chunks(request, stream)

    async def _chunks(
        self, request: ChatCompletionRequest, stream: RequestStream
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
            if event.text:
                yield chunk({"content": event.text})
            if event.finish_reason is not None:
                raise_if_failed(event)
                yield chunk({}, event.finish_reason)
                if include_usage:
                    yield {
                        "id": stream.request_id,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": request.model,
                        "choices": [],
                        "usage": usage(event.n_prompt_tokens, event.n_generated_tokens),
                    }
