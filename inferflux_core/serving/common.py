"""What the chat and completion services share: sampling, limits, ids and usage."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from inferflux_core.contracts import SamplingParams
from inferflux_core.engine.requests import GenerationEvent, GenerationRequest, new_request_id
from inferflux_core.engine.stream import RequestStream
from inferflux_core.errors import InferfluxError, InvalidRequestError
from inferflux_core.protocol.common import SamplingFields, reject_unsupported

if TYPE_CHECKING:
    from inferflux_core.engine.engine import Engine
    from inferflux_core.engine.model import LoadedModel


@dataclass(slots=True)
class Collected:
    """A finished sequence's whole output."""

    text: str
    finish_reason: str
    n_prompt_tokens: int
    n_generated_tokens: int


def usage(n_prompt: int, n_generated: int) -> dict[str, int]:
    """OpenAI's ``usage`` object."""
    return {
        "prompt_tokens": n_prompt,
        "completion_tokens": n_generated,
        "total_tokens": n_prompt + n_generated,
    }


def raise_if_failed(event: GenerationEvent) -> None:
    """Re-raise a sequence's failure as the error the client should see."""
    if event.finish_reason == "error":
        if isinstance(event.error, InferfluxError):
            raise event.error
        raise InferfluxError("generation failed")


async def collect(stream: RequestStream) -> Collected:
    """Run a stream to its end and gather its text."""
    pieces: list[str] = []
    async for event in stream:
        pieces.append(event.text)
        if event.finish_reason is not None:
            raise_if_failed(event)
            return Collected(
                "".join(pieces),
                event.finish_reason,
                event.n_prompt_tokens,
                event.n_generated_tokens,
            )
    raise InferfluxError("the request ended without a result")


async def merge(streams: Sequence[RequestStream]) -> AsyncIterator[tuple[int, GenerationEvent]]:
    """Interleave several streams' events as they come, tagged with the stream's index."""
    if len(streams) == 1:
        async for event in streams[0]:
            yield 0, event
        return
    queue: asyncio.Queue[tuple[int, GenerationEvent]] = asyncio.Queue()

    async def pump(index: int, stream: RequestStream) -> None:
        async for event in stream:
            await queue.put((index, event))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        remaining = len(streams)
        while remaining:
            index, event = await queue.get()
            if event.finish_reason is not None:
                remaining -= 1
            yield index, event
    finally:
        for task in tasks:
            task.cancel()
        for stream in streams:
            stream.cancel()


class Service:
    """Builds engine requests from OpenAI bodies."""

    object_prefix = "cmpl"

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def generation_request(
        self,
        model: LoadedModel,
        fields: SamplingFields,
        prompt_tokens: list[int],
        requested_max_tokens: int | None,
    ) -> GenerationRequest:
        """The engine request for one prompt, with limits applied."""
        if fields.n > 1:
            reject_unsupported({"n > 1": True})
        room = model.backend.info.context_length - len(prompt_tokens)
        limit = model.config.max_tokens_limit
        max_tokens = min(requested_max_tokens or limit, limit, max(room, 1))
        return GenerationRequest(
            prompt_tokens=prompt_tokens,
            max_tokens=max_tokens,
            sampling=sampling_params(fields),
            stop=fields.stop_strings(),
            ignore_eos=fields.ignore_eos,
            min_tokens=fields.min_tokens,
            priority=fields.priority,
            request_id=new_request_id(self.object_prefix),
        )

    def check_token_ids(self, model: LoadedModel, tokens: list[int], param: str) -> None:
        """400 if a token id is outside the vocabulary."""
        vocab = model.backend.info.vocab_size
        for token in tokens:
            if not 0 <= token < vocab:
                raise InvalidRequestError(
                    f"{param}: token id {token} is outside the vocabulary (0..{vocab - 1})",
                    param=param,
                )

    @staticmethod
    def created() -> int:
        """Seconds since the epoch, as OpenAI's ``created``."""
        return int(time.time())


def sampling_params(fields: SamplingFields) -> SamplingParams:
    """The backend sampling settings for a request."""
    return SamplingParams(
        temperature=fields.temperature,
        top_p=fields.top_p,
        top_k=fields.top_k,
        min_p=fields.min_p,
        seed=fields.seed,
        repeat_penalty=fields.repeat_penalty,
        presence_penalty=fields.presence_penalty,
        frequency_penalty=fields.frequency_penalty,
    )


def chunk_usage(include: bool, n_prompt: int, n_generated: int) -> dict[str, Any]:
    """The trailing usage-only chunk fields, when ``include_usage`` asked for one."""
    return {"usage": usage(n_prompt, n_generated)} if include else {}
