"""OpenAI text completions on the engine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from inferflux_core.engine.requests import GenerationRequest
from inferflux_core.engine.stream import RequestStream
from inferflux_core.errors import InvalidRequestError
from inferflux_core.protocol.common import parse_body
from inferflux_core.protocol.completions import CompletionRequest
from inferflux_core.serving.common import (
    Collected,
    Service,
    Usage,
    collect_all,
    merge,
    raise_if_failed,
    usage,
    worst_case,
)
from inferflux_core.serving.infill import infill_tokens
from inferflux_core.serving.logprobs import CompletionLogprobs, TokenBytes

if TYPE_CHECKING:
    from inferflux_core.engine.model import LoadedModel


@dataclass(frozen=True, slots=True)
class Submitted:
    """A submitted completion request: ``candidates`` streams per prompt, prompt after prompt,
    and what each prompt's choices start with when ``echo`` asks."""

    request: CompletionRequest
    streams: list[RequestStream]
    candidates: int
    echoes: list[str]
    echo_tokens: list[list[int]]
    token_bytes: TokenBytes

    def new_logprobs(self, prompt_index: int) -> CompletionLogprobs | None:
        """A choice's logprobs object, holding its echoed prompt; None if not asked for."""
        if self.request.logprobs is None:
            return None
        logprobs = CompletionLogprobs(self.token_bytes)
        logprobs.add_prompt(self.echo_tokens[prompt_index])
        logprobs.offset = len(self.echoes[prompt_index])
        return logprobs


class CompletionService(Service):
    """``text_completion`` objects from request bodies.

    A list of prompts gives ``n`` choices each; choice ``prompt_index * n + i`` is the i-th of
    that prompt, as OpenAI numbers them.
    """

    object_prefix = "cmpl"

    def _prepare(
        self, body: Any
    ) -> tuple[CompletionRequest, LoadedModel, list[GenerationRequest], list[str]]:
        """The checked request, its model, one engine request per prompt and each prompt's
        echo: the tokenizer's work (it runs in the worker pool)."""
        request = parse_body(CompletionRequest, body)
        candidates = request.candidates
        model = self.engine.model(request.model)
        prompts = request.prompts()
        if not prompts:
            raise InvalidRequestError("prompt: must not be empty", param="prompt")
        request.check_sequences(len(prompts))
        # Ranking best_of candidates needs their logprobs even when the client asks for none.
        logprobs = request.logprobs
        if logprobs is None and candidates > request.n:
            logprobs = 0
        generations = [
            self.generation_request(
                model,
                request,
                self._prompt_tokens(model, request, p),
                request.max_tokens,
                logprobs=logprobs,
            )
            for p in prompts
        ]
        echoes = [
            (p if isinstance(p, str) else model.backend.detokenize(p)) if request.echo else ""
            for p in prompts
        ]
        return request, model, generations, echoes

    async def _submit(self, body: Any, usage_meter: Usage) -> Submitted:
        """Prepare in the worker pool, then submit ``best_of`` (or ``n``) sequences per
        prompt from the event loop."""
        request, model, generations, echoes = await self.pool.run(self._prepare, body)
        candidates = request.candidates
        usage_meter.reserve(worst_case(generations, candidates))
        streams: list[RequestStream] = []
        try:
            for generation in generations:
                streams.extend(self.submit_choices(model, generation, candidates))
        except BaseException:
            for stream in streams:
                stream.cancel()
            raise
        usage_meter.per_prompt = candidates
        for index, stream in enumerate(streams):
            usage_meter.update(index, stream.n_prompt_tokens, 0)
        return Submitted(
            request,
            streams,
            candidates,
            echoes=echoes,
            echo_tokens=[g.prompt_tokens if request.echo else [] for g in generations],
            token_bytes=model.backend.token_bytes,
        )

    def _prompt_tokens(
        self, model: LoadedModel, request: CompletionRequest, prompt: str | list[int]
    ) -> list[int]:
        if isinstance(prompt, list):
            self.check_token_ids(model, prompt, "prompt")
        if request.suffix:
            return infill_tokens(model, prompt, request.suffix)
        return model.tokenize_prompt(prompt) if isinstance(prompt, str) else list(prompt)

    async def input_text(self, body: Any) -> str:
        """The prompts' text, then the ``suffix``, as guardrails and the audit log see them,
        joined by newlines; token-id prompts are detokenized (400 if the body is invalid)."""
        return await self.pool.run(self._input_text, body)

    def _input_text(self, body: Any) -> str:
        request = parse_body(CompletionRequest, body)
        texts = []
        for prompt in request.prompts():
            if isinstance(prompt, str):
                texts.append(prompt)
            else:
                model = self.engine.model(request.model)
                self.check_token_ids(model, list(prompt), "prompt")
                texts.append(model.backend.detokenize(list(prompt)))
        if request.suffix:
            texts.append(request.suffix)
        return "\n".join(texts)

    async def create(self, body: Any, usage_meter: Usage | None = None) -> dict[str, Any]:
        """A complete ``text_completion``; ``usage_meter`` is kept up to date."""
        usage_meter = usage_meter or Usage()
        submitted = await self._submit(body, usage_meter)
        request = submitted.request
        results = await collect_all(submitted.streams, usage_meter)
        for index, result in enumerate(results):
            usage_meter.update(index, result.n_prompt_tokens, result.n_generated_tokens)
        choices: list[dict[str, Any]] = []
        for prompt_index in range(len(submitted.echoes)):
            start = prompt_index * submitted.candidates
            group = best(results[start : start + submitted.candidates], request.n)
            for result in group:
                logprobs = submitted.new_logprobs(prompt_index)
                if logprobs is not None:
                    logprobs.add(result.logprobs)
                choices.append(
                    {
                        "index": len(choices),
                        "text": submitted.echoes[prompt_index] + result.text,
                        "logprobs": logprobs.take() if logprobs is not None else None,
                        "finish_reason": result.finish_reason,
                    }
                )
        return {
            "id": submitted.streams[0].request_id,
            "object": "text_completion",
            "created": self.created(),
            "model": request.model,
            "choices": choices,
            "usage": usage(usage_meter.prompt_tokens, usage_meter.completion_tokens),
        }

    async def open_stream(
        self, body: Any, usage_meter: Usage | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Submit now (errors raise here, before any byte is sent); iterate for chunks.

        ``usage_meter`` is kept up to date as events arrive.
        """
        usage_meter = usage_meter or Usage()
        return self._chunks(await self._submit(body, usage_meter), usage_meter)

    async def _chunks(
        self, submitted: Submitted, usage_meter: Usage
    ) -> AsyncIterator[dict[str, Any]]:
        request = submitted.request
        streams = submitted.streams
        created = self.created()
        request_id = streams[0].request_id
        n = submitted.candidates  # best_of is refused with stream: one candidate per choice
        logprobs = [submitted.new_logprobs(index // n) for index in range(len(streams))]

        def chunk(index: int, text: str, finish: str | None) -> dict[str, Any]:
            choice_logprobs = logprobs[index]
            out: dict[str, Any] = {
                "id": request_id,
                "object": "text_completion",
                "created": created,
                "model": request.model,
                "choices": [
                    {
                        "index": index,
                        "text": text,
                        "logprobs": choice_logprobs.take() if choice_logprobs else None,
                        "finish_reason": finish,
                    }
                ],
            }
            if request.include_usage:
                out["usage"] = None
            return out

        try:  # a client gone during the echo must free its sequences too
            for index in range(len(streams)):
                echo = submitted.echoes[index // n]
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
            if not event.text and not event.logprobs and finish is None:
                continue
            choice_logprobs = logprobs[index]
            if choice_logprobs is not None:
                choice_logprobs.add(event.logprobs)
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


def best(candidates: list[Collected], n: int) -> list[Collected]:
    """The ``n`` candidates with the highest cumulative logprob, best first (``best_of``);
    all of them, in order, when there are only ``n``."""
    if len(candidates) <= n:
        return candidates
    return sorted(candidates, key=lambda c: c.cumulative_logprob, reverse=True)[:n]
