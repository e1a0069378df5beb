"""OpenAI text completions on the engine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from inferflux_core.engine.stream import RequestStream
from inferflux_core.errors import InvalidRequestError
from inferflux_core.protocol.common import parse_body, reject_unsupported
from inferflux_core.protocol.completions import CompletionRequest
from inferflux_core.serving.common import (
    Service,
    Usage,
    collect,
    merge,
    raise_if_failed,
    usage,
)

MAX_PROMPTS = 64


class CompletionService(Service):
    """``text_completion`` objects from request bodies; a list of prompts gives one choice each."""

    object_prefix = "cmpl"

    def _submit(
        self, body: Any, usage_meter: Usage
    ) -> tuple[CompletionRequest, list[RequestStream], list[str]]:
        """Submit one sequence per prompt; also returns each choice's echo (``echo``)."""
        request = parse_body(CompletionRequest, body)
        reject_unsupported(
            {
                "suffix": request.suffix,
                "logprobs": request.logprobs is not None,
                "best_of": request.best_of not in (None, 1),
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
        for index, stream in enumerate(streams):
            usage_meter.update(index, stream.n_prompt_tokens, 0)
        echoes = [
            (p if isinstance(p, str) else model.backend.detokenize(p)) if request.echo else ""
            for p in prompts
        ]
        return request, streams, echoes

    def input_text(self, body: Any) -> str:
        """The prompts' text as guardrails and the audit log see it, joined by newlines;
        token-id prompts are detokenized (400 if the body is invalid)."""
        request = parse_body(CompletionRequest, body)
        texts = []
        for prompt in request.prompts():
            if isinstance(prompt, str):
                texts.append(prompt)
            else:
                model = self.engine.model(request.model)
                self.check_token_ids(model, list(prompt), "prompt")
                texts.append(model.backend.detokenize(list(prompt)))
        return "\n".join(texts)

    async def create(self, body: Any, usage_meter: Usage | None = None) -> dict[str, Any]:
        """A complete ``text_completion``; ``usage_meter`` is kept up to date."""
        usage_meter = usage_meter or Usage()
        request, streams, echoes = self._submit(body, usage_meter)
        try:
            results = await asyncio.gather(*(collect(s) for s in streams))
        finally:
            for stream in streams:
                stream.cancel()
        for index, result in enumerate(results):
            usage_meter.update(index, result.n_prompt_tokens, result.n_generated_tokens)
        return {
            "id": streams[0].request_id,
            "object": "text_completion",
            "created": self.created(),
            "model": request.model,
            "choices": [
                {
                    "index": i,
                    "text": echoes[i] + r.text,
                    "logprobs": None,
                    "finish_reason": r.finish_reason,
                }
                for i, r in enumerate(results)
            ],
            "usage": usage(usage_meter.prompt_tokens, usage_meter.completion_tokens),
        }

    def open_stream(
        self, body: Any, usage_meter: Usage | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Submit now (errors raise here, before any byte is sent); iterate for chunks.

        ``usage_meter`` is kept up to date as events arrive.
        """
        usage_meter = usage_meter or Usage()
        request, streams, echoes = self._submit(body, usage_meter)
        return self._chunks(request, streams, echoes, usage_meter)

    async def _chunks(
        self,
        request: CompletionRequest,
        streams: list[RequestStream],
        echoes: list[str],
        usage_meter: Usage,
    ) -> AsyncIterator[dict[str, Any]]:
        created = self.created()
        request_id = streams[0].request_id

        def chunk(index: int, text: str, finish: str | None) -> dict[str, Any]:
            out: dict[str, Any] = {
                "id": request_id,
                "object": "text_completion",
                "created": created,
                "model": request.model,
                "choices": [
                    {"index": index, "text": text, "logprobs": None, "finish_reason": finish}
                ],
            }
            if request.include_usage:
                out["usage"] = None
            return out

        try:  # a client gone during the echo must free its sequences too
            for index, echo in enumerate(echoes):
                if echo:
                    yield chunk(index, echo, None)
        except BaseException:
            for stream in streams:
                stream.cancel()
            raise
        async for index, event in merge(streams):
            usage_meter.update(index, event.n_prompt_tokens, event.n_generated_tokens)
            finish = event.finish_reason
            if finish is not None:
                raise_if_failed(event)
            if not event.text and finish is None:
                continue
            yield chunk(index, event.text, finish)
        if request.include_usage:
            yield {
                "id": request_id,
                "object": "text_completion",
                "created": created,
                "model": request.model,
                "choices": [],
                "usage": usage(usage_meter.prompt_tokens, usage_meter.completion_tokens),
            }
