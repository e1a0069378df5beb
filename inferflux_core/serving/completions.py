"""OpenAI text completions on the engine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from inferflux_core.engine.stream import RequestStream
from inferflux_core.errors import InvalidRequestError
from inferflux_core.protocol.common import parse_body, reject_unsupported
from inferflux_core.protocol.completions import CompletionRequest
from inferflux_core.serving.common import Service, collect, merge, raise_if_failed, usage

MAX_PROMPTS = 64


class CompletionService(Service):
    """``text_completion`` objects from request bodies; a list of prompts gives one choice each."""

    object_prefix = "cmpl"

    def _submit(self, body: Any) -> tuple[CompletionRequest, list[RequestStream]]:
        request = parse_body(CompletionRequest, body)
        reject_unsupported(
            {
                "echo": request.echo,
                "suffix": request.suffix,
                "logprobs": request.logprobs is not None,
                "best_of": request.best_of not in (None, 1),
                "logit_bias": request.logit_bias,
            }
        )
        model = self.engine.model(request.model)
        prompts = request.prompts()
        if not prompts:
            raise InvalidRequestError("prompt: must not be empty", param="prompt")
        if len(prompts) > MAX_PROMPTS:
            raise InvalidRequestError(
                f"prompt: at most {MAX_PROMPTS} prompts per request", param="prompt"
            )
        generations = []
        for prompt in prompts:
            if isinstance(prompt, str):
                tokens = model.tokenize_prompt(prompt)
            else:
                tokens = list(prompt)
                self.check_token_ids(model, tokens, "prompt")
            generations.append(self.generation_request(model, request, tokens, request.max_tokens))
        streams: list[RequestStream] = []
        try:
            for generation in generations:
                streams.append(self.engine.submit(model.name, generation))
        except BaseException:
            for stream in streams:
                stream.cancel()
            raise
        return request, streams

    async def create(self, body: Any) -> dict[str, Any]:
        """A complete ``text_completion``."""
        request, streams = self._submit(body)
        try:
            results = await asyncio.gather(*(collect(s) for s in streams))
        finally:
            for stream in streams:
                stream.cancel()
        return {
            "id": streams[0].request_id,
            "object": "text_completion",
            "created": self.created(),
            "model": request.model,
            "choices": [
                {"index": i, "text": r.text, "logprobs": None, "finish_reason": r.finish_reason}
                for i, r in enumerate(results)
            ],
            "usage": usage(
                sum(r.n_prompt_tokens for r in results),
                sum(r.n_generated_tokens for r in results),
            ),
        }

    def open_stream(self, body: Any) -> AsyncIterator[dict[str, Any]]:
        """Submit now (errors raise here, before any byte is sent); iterate for chunks."""
        request, streams = self._submit(body)
        return self._chunks(request, streams)

    async def _chunks(
        self, request: CompletionRequest, streams: list[RequestStream]
    ) -> AsyncIterator[dict[str, Any]]:
        created = self.created()
        request_id = streams[0].request_id
        n_prompt = n_generated = 0
        async for index, event in merge(streams):
            finish = event.finish_reason
            if finish is not None:
                raise_if_failed(event)
                n_prompt += event.n_prompt_tokens
                n_generated += event.n_generated_tokens
            if not event.text and finish is None:
                continue
            out: dict[str, Any] = {
                "id": request_id,
                "object": "text_completion",
                "created": created,
                "model": request.model,
                "choices": [
                    {"index": index, "text": event.text, "logprobs": None, "finish_reason": finish}
                ],
            }
            if request.include_usage:
                out["usage"] = None
            yield out
        if request.include_usage:
            yield {
                "id": request_id,
                "object": "text_completion",
                "created": created,
                "model": request.model,
                "choices": [],
                "usage": usage(n_prompt, n_generated),
            }
