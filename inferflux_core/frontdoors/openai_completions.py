"""``POST /v1/completions``: OpenAI's legacy completions wire format to typed requests and back.

A list of prompts makes one engine request per prompt, ``n`` choices each; choice
``prompt_index * n + i`` is the i-th of that prompt, as OpenAI numbers them.
"""

from __future__ import annotations

import time
from typing import Any

from inferflux_core.contracts.generation import (
    Finish,
    InferenceEvent,
    InferenceRequest,
    TextDelta,
    UsageReport,
    new_request_id,
)
from inferflux_core.engine import Engine
from inferflux_core.engine.adapters import qualified_name
from inferflux_core.engine.collect import ChoiceResult, Collected
from inferflux_core.engine.prepare import check_token_ids
from inferflux_core.errors import InvalidRequestError
from inferflux_core.frontdoors.driver import Call, Chunk
from inferflux_core.frontdoors.openai_logprobs import CompletionLogprobs
from inferflux_core.frontdoors.options import check_stream_flag, generation_options
from inferflux_core.frontdoors.usage import usage_object
from inferflux_core.protocol.common import parse_body
from inferflux_core.protocol.completions import CompletionRequest


class CompletionsDoor:
    """The text completions front door."""

    endpoint = "completions"

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def parse(self, body: Any) -> Call:
        """One typed request per prompt of a completions body."""
        check_stream_flag(body)
        wire = parse_body(CompletionRequest, body)
        candidates = wire.candidates
        prompts = wire.prompts()
        if not prompts:
            raise InvalidRequestError("prompt: must not be empty", param="prompt")
        wire.check_sequences(len(prompts))
        options = generation_options(
            wire,
            max_tokens=wire.max_tokens,
            logprobs=wire.logprobs,
            best_of=candidates if candidates > wire.n else None,
            echo=wire.echo,
        )
        first_id = new_request_id("cmpl")
        requests = tuple(
            InferenceRequest(
                model=qualified_name(wire.model, wire.adapter),
                prompt=prompt if isinstance(prompt, str) else tuple(prompt),
                suffix=wire.suffix or None,
                options=options,
                priority=wire.priority,
                request_id=first_id if i == 0 else new_request_id("cmpl"),
                keep_alive=wire.keep_alive,
            )
            for i, prompt in enumerate(prompts)
        )
        return Call(requests, wire.stream, wire, wire.n)

    def input_text(self, call: Call) -> str:
        """The prompts' text, then the ``suffix``, a line each; token ids are detokenized."""
        texts = []
        for request in call.requests:
            if isinstance(request.prompt, tuple):
                model = self._engine.step_model(request.model, "token-id prompts")
                check_token_ids(model, request.prompt, "prompt")
                texts.append(model.backend.detokenize(list(request.prompt)))
            else:
                texts.append(request.prompt or "")
        suffix = call.requests[0].suffix
        if suffix:
            texts.append(suffix)
        return "\n".join(texts)

    def encode(self, call: Call, result: Collected) -> Chunk:
        """A ``text_completion``."""
        wire: CompletionRequest = call.wire
        choices = []
        for index, choice in enumerate(result.choices):
            logprobs = _logprobs(choice) if wire.logprobs is not None else None
            choices.append(
                {
                    "index": index,
                    "text": choice.echo + choice.text,
                    "logprobs": logprobs.take() if logprobs is not None else None,
                    "finish_reason": choice.finish_reason,
                }
            )
        return {
            "id": call.requests[0].request_id,
            "object": "text_completion",
            "created": int(time.time()),
            "model": wire.model,
            "choices": choices,
            "usage": usage_object(result.usage),
        }

    def stream_encoder(self, call: Call) -> CompletionChunks:
        """``text_completion`` chunks."""
        return CompletionChunks(call)


def _logprobs(choice: ChoiceResult) -> CompletionLogprobs:
    logprobs = CompletionLogprobs()
    logprobs.add_prompt(choice.echo_logprobs)
    logprobs.offset = len(choice.echo)
    logprobs.add(choice.logprobs)
    return logprobs


class CompletionChunks:
    """Typed events as streamed ``text_completion`` chunks."""

    def __init__(self, call: Call) -> None:
        self._wire: CompletionRequest = call.wire
        self._id = call.requests[0].request_id
        self._created = int(time.time())
        self._logprobs: dict[int, CompletionLogprobs] = {}

    def start(self) -> list[Chunk]:
        """Nothing before the events (an echo is an event)."""
        return []

    def event(self, event: InferenceEvent) -> list[Chunk]:
        """A chunk for new text (or logprobs), or for a choice's finish."""
        if isinstance(event, TextDelta):
            logprobs = self._choice_logprobs(event.choice)
            if logprobs is not None:
                if event.echo:
                    logprobs.add_prompt(event.logprobs)
                    logprobs.offset = len(event.text)
                else:
                    logprobs.add(event.logprobs)
            if not event.text and not event.logprobs:
                return []
            return [self._chunk(event.choice, event.text, None)]
        if isinstance(event, Finish):
            return [self._chunk(event.choice, "", event.reason)]
        return []

    def end(self, usage: UsageReport) -> list[Chunk]:
        """The usage chunk, when ``stream_options.include_usage`` asked for one."""
        if not self._wire.include_usage:
            return []
        return [{**self._base(), "choices": [], "usage": usage_object(usage)}]

    def _choice_logprobs(self, index: int) -> CompletionLogprobs | None:
        if self._wire.logprobs is None:
            return None
        return self._logprobs.setdefault(index, CompletionLogprobs())

    def _base(self) -> Chunk:
        return {
            "id": self._id,
            "object": "text_completion",
            "created": self._created,
            "model": self._wire.model,
        }

    def _chunk(self, index: int, text: str, finish: str | None) -> Chunk:
        logprobs = self._choice_logprobs(index)
        out = {
            **self._base(),
            "choices": [
                {
                    "index": index,
                    "text": text,
                    "logprobs": logprobs.take() if logprobs is not None else None,
                    "finish_reason": finish,
                }
            ],
        }
        if self._wire.include_usage:
            out["usage"] = None
        return out
