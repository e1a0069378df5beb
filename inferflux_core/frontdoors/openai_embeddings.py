"""OpenAI embeddings on the engine: inputs to token lists, vectors to ``embedding`` objects."""

from __future__ import annotations

import array
import base64
import math
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from inferflux_core.contracts.generation import UsageReport
from inferflux_core.engine.prepare import check_token_ids
from inferflux_core.engine.workers import WorkerPool
from inferflux_core.errors import ContextLengthError, InvalidRequestError
from inferflux_core.frontdoors.usage import Usage
from inferflux_core.protocol.common import parse_body
from inferflux_core.protocol.embeddings import EmbeddingRequest

if TYPE_CHECKING:
    from inferflux_core.engine import Engine
    from inferflux_core.engine.model import LoadedModel


class EmbeddingService:
    """``{"object": "list", "data": [embedding, ...], "usage"}`` from request bodies."""

    endpoint = "embeddings"

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.pool: WorkerPool = engine.pool

    async def create(self, body: Any, usage_meter: Usage | None = None) -> dict[str, Any]:
        """Embed every input in one queued job; vectors have unit length, as OpenAI's.

        Validating and tokenizing, and scaling and encoding the vectors, run in the worker
        pool; the job is queued from the event loop.
        """
        usage_meter = usage_meter or Usage()
        request, model, size, inputs = await self.pool.run(self._prepare, body)
        n_tokens = sum(len(tokens) for tokens in inputs)
        usage_meter.reserve(n_tokens)
        usage_meter.record(UsageReport(n_tokens, 0))
        vectors = await model.runner.embeddings.submit(inputs)
        data = await self.pool.run(embedding_objects, vectors, size, request.encoding_format)
        return {
            "object": "list",
            "data": data,
            "model": request.model,
            "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens},
        }

    def _prepare(self, body: Any) -> tuple[EmbeddingRequest, LoadedModel, int, list[list[int]]]:
        request = parse_body(EmbeddingRequest, body)
        model = self.embedding_model(request.model)
        info = model.backend.embedding_info
        size = self._dimensions(model, request.dimensions, info.size)
        return request, model, size, self._token_lists(model, request, info.max_input_tokens)

    async def input_text(self, body: Any) -> str:
        """The inputs' text as guardrails and the audit log see it, joined by newlines;
        token ids are detokenized (400 if the body is invalid)."""
        return await self.pool.run(self._input_text, body)

    def _input_text(self, body: Any) -> str:
        request = parse_body(EmbeddingRequest, body)
        texts = []
        for item in request.inputs():
            if isinstance(item, str):
                texts.append(item)
            else:
                model = self.engine.step_model(request.model, "token-id inputs")
                check_token_ids(model, item, "input")
                texts.append(model.backend.detokenize(item))
        return "\n".join(texts)

    def embedding_model(self, name: str) -> LoadedModel:
        """The model called ``name``: 404 if there is none, 400 if it cannot embed."""
        model = self.engine.step_model(name, "embeddings")
        if model.name != name:  # BASE:ADAPTER; an adapter does not change the embeddings
            raise InvalidRequestError(
                f"model {name!r}: LoRA adapters do not apply to embeddings; use {model.name!r}",
                param="model",
                code="unsupported",
            )
        if not model.serves_embeddings:
            raise InvalidRequestError(
                f"model {name!r} cannot produce embeddings", param="model", code="unsupported"
            )
        return model

    def _dimensions(self, model: LoadedModel, requested: int | None, size: int) -> int:
        """The vector size to return: the model's, or a Matryoshka size it was configured with."""
        if requested is None or requested == size:
            return size
        allowed = sorted({d for d in model.config.matryoshka_dimensions or () if d < size})
        if requested in allowed:
            return requested
        if not allowed:
            message = (
                f"model {model.name!r} does not support shortening its embeddings (it is not "
                f"configured as a Matryoshka model); dimensions must be {size} or omitted"
            )
        else:
            sizes = ", ".join(str(d) for d in [*allowed, size])
            message = f"dimensions must be one of {sizes} for model {model.name!r}"
        raise InvalidRequestError(message, param="dimensions", code="unsupported")

    def _token_lists(
        self, model: LoadedModel, request: EmbeddingRequest, max_tokens: int
    ) -> list[list[int]]:
        """Each input as token ids: 400 if there are none or too many, or one is empty or long."""
        inputs = request.inputs()
        if not inputs:
            raise InvalidRequestError("input: must not be empty", param="input")
        lists = []
        for index, item in enumerate(inputs):
            if isinstance(item, str):
                # Special tokens the model adds itself (BOS, an embedding model's EOS/SEP).
                tokens = model.backend.tokenize(item, add_special=True) if item else []
            else:
                tokens = item
                check_token_ids(model, tokens, "input")
            if not tokens:
                raise InvalidRequestError(f"input[{index}]: must not be empty", param="input")
            if len(tokens) > max_tokens:
                raise ContextLengthError(
                    f"input[{index}] has {len(tokens)} tokens, but model {model.name!r} "
                    f"embeds at most {max_tokens} tokens per input; shorten it",
                    param="input",
                )
            lists.append(tokens)
        return lists


def embedding_objects(
    vectors: Sequence[Sequence[float]], size: int, encoding_format: str
) -> list[dict[str, Any]]:
    """OpenAI's ``embedding`` objects: each vector cut to ``size``, scaled to unit length,
    encoded."""
    return [
        {
            "object": "embedding",
            "index": index,
            "embedding": encode(unit_vector(vector[:size]), encoding_format),
        }
        for index, vector in enumerate(vectors)
    ]


def unit_vector(vector: Sequence[float]) -> array.array[float]:
    """``vector`` scaled to unit L2 length, as float32 (all zeros stay zeros)."""
    norm = math.sqrt(math.fsum(x * x for x in vector))
    scale = 1.0 / norm if norm > 0 else 0.0
    return array.array("f", [x * scale for x in vector])


def encode(vector: array.array[float], encoding_format: str) -> list[float] | str:
    """A list of floats, or base64 of little-endian float32 bytes (OpenAI's ``base64``)."""
    if encoding_format == "float":
        return vector.tolist()
    if sys.byteorder != "little":
        vector = array.array("f", vector)
        vector.byteswap()
    return base64.b64encode(vector.tobytes()).decode("ascii")
