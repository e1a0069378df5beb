"""Embeddings from the loaded model: a second ``llama_context`` that pools hidden states.

The context shares the already-loaded ``llama_model`` (llama.cpp allows several contexts per
model; the weights are not loaded twice) and is created on the first embeddings request, so
a model that never embeds pays nothing for it. It is only used from the engine's step thread,
between generation steps, so it never competes with the generation context for the cores.

Each call packs several inputs into one ``llama_decode`` with one ``seq_id`` each, reads
``llama_get_embeddings_seq`` per input and clears the KV afterwards. llama.cpp pools each
micro-batch separately, so an input never spans two: the context's micro-batch
(``options.batch_size``, capped at the context length) is the longest input it embeds.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from inferflux_core.contracts import EmbeddingInfo
from inferflux_core.errors import BackendError, InvalidRequestError
from inferflux_core.gguf_check import GGUFHeader, architecture, metadata_int
from inferflux_plugins.backends.llama_cpp.batch import TokenBatch
from inferflux_plugins.backends.llama_cpp.gpu import CPU_PLACEMENT, Placement, apply_context_params

log = logging.getLogger("inferflux.llama_cpp")

POOLING_NONE, POOLING_MEAN, POOLING_CLS, POOLING_LAST, POOLING_RANK = 0, 1, 2, 3, 4
POOLING_BY_NAME = {
    "none": POOLING_NONE,
    "mean": POOLING_MEAN,
    "cls": POOLING_CLS,
    "last": POOLING_LAST,
}
POOLING_NAMES = {value: name for name, value in POOLING_BY_NAME.items()} | {POOLING_RANK: "rank"}
#: Inputs per ``llama_decode`` (llama.cpp's ``n_seq_max`` of the embedding context).
MAX_BATCH_INPUTS = 64


def resolve_pooling(setting: str, header: GGUFHeader) -> int:
    """llama.cpp's pooling type for ``options.embedding_pooling``.

    ``auto`` takes ``<arch>.pooling_type`` from the GGUF (set by embedding models) and falls
    back to mean pooling for a model without one, such as a chat model.
    """
    if setting != "auto":
        return POOLING_BY_NAME[setting]
    arch = architecture(header)
    declared = metadata_int(header, f"{arch}.pooling_type") if arch else None
    if declared is None or declared < 0:
        return POOLING_MEAN
    return declared


@dataclass(frozen=True, slots=True)
class EmbeddingSettings:
    """How the embedding context is built."""

    pooling: int
    batch_tokens: int
    threads: int
    flash_attn: int
    #: The generation context's placement: its KV cache goes where that one's does.
    placement: Placement = CPU_PLACEMENT


class EmbeddingContext:
    """Pooled embeddings of token lists, batched into as few ``llama_decode`` calls as fit."""

    def __init__(self, llama: ModuleType, model: Any, settings: EmbeddingSettings) -> None:
        self._llama = llama
        self._model = model
        self._settings = settings
        size = getattr(llama, "llama_model_n_embd_out", llama.llama_model_n_embd)(model)
        self.info = EmbeddingInfo(
            size=size,
            max_input_tokens=settings.batch_tokens,
            batch_tokens=settings.batch_tokens,
            # every input has a token, and llama.cpp aborts with more sequences than outputs
            batch_inputs=min(MAX_BATCH_INPUTS, settings.batch_tokens),
        )
        self._ctx: Any = None
        self._batch: TokenBatch | None = None

    def embed(self, inputs: Sequence[Sequence[int]]) -> list[list[float]]:
        """One pooled (not normalized) vector per input, in order."""
        self._check_pooling()
        ctx = self._context()
        info = self.info
        vectors: list[list[float]] = []
        group: list[Sequence[int]] = []
        n_tokens = 0
        for tokens in inputs:
            if not 0 < len(tokens) <= info.max_input_tokens:
                raise BackendError(
                    f"an input of {len(tokens)} tokens cannot be embedded "
                    f"(1 to {info.max_input_tokens})"
                )
            if group and (
                n_tokens + len(tokens) > info.batch_tokens or len(group) == info.batch_inputs
            ):
                vectors.extend(self._decode(ctx, group))
                group, n_tokens = [], 0
            group.append(tokens)
            n_tokens += len(tokens)
        if group:
            vectors.extend(self._decode(ctx, group))
        return vectors

    def _check_pooling(self) -> None:
        pooling = self._settings.pooling
        if pooling not in (POOLING_MEAN, POOLING_CLS, POOLING_LAST):
            name = POOLING_NAMES.get(pooling, str(pooling))
            raise InvalidRequestError(
                f"this model's embedding pooling is '{name}', which does not give one vector "
                "per input; set the model's options.embedding_pooling to mean, cls or last",
                param="model",
                code="unsupported",
            )

    def _context(self) -> Any:
        if self._ctx is not None:
            return self._ctx
        llama, settings = self._llama, self._settings
        params = llama.llama_context_default_params()
        params.n_ctx = params.n_batch = params.n_ubatch = settings.batch_tokens
        params.n_seq_max = self.info.batch_inputs
        params.n_threads = params.n_threads_batch = settings.threads
        params.flash_attn_type = settings.flash_attn
        apply_context_params(params, settings.placement)
        params.embeddings = True
        params.pooling_type = settings.pooling
        if hasattr(params, "kv_unified"):
            params.kv_unified = True  # one stream: a batch is cleared after every call
        ctx = llama.llama_init_from_model(self._model, params)
        if not ctx:
            raise BackendError(
                f"llama.cpp could not create an embedding context of {settings.batch_tokens} "
                "tokens (out of memory?)"
            )
        self._ctx = ctx
        self._batch = TokenBatch(llama, settings.batch_tokens, self.info.batch_inputs)
        log.info(
            "llama_cpp embedding context: %d tokens per batch, %s pooling",
            settings.batch_tokens,
            POOLING_NAMES[settings.pooling],
        )
        return ctx

    def _decode(self, ctx: Any, group: Sequence[Sequence[int]]) -> list[list[float]]:
        llama, batch = self._llama, self._batch
        assert batch is not None
        memory = llama.llama_get_memory(ctx)
        for seq_id, tokens in enumerate(group):
            batch.add(seq_id, tokens, 0, len(tokens), 0, True)
        batch.seal()
        n_tokens = batch.n_tokens
        try:
            code = llama.llama_decode(ctx, batch.struct)
            if code != 0:
                raise BackendError(
                    f"llama_decode returned {code} embedding {len(group)} inputs "
                    f"({n_tokens} tokens)"
                )
            size = self.info.size
            vectors = []
            for seq_id in range(len(group)):
                pooled = llama.llama_get_embeddings_seq(ctx, seq_id)
                if not pooled:
                    raise BackendError(f"llama.cpp returned no embedding for input {seq_id}")
                vectors.append(pooled[:size])
            return vectors
        finally:
            batch.clear()
            llama.llama_memory_clear(memory, True)

    def close(self) -> None:
        """Free the context (not the model); calling it again does nothing."""
        if self._ctx is not None:
            self._llama.llama_free(self._ctx)
            self._ctx = None
            self._batch = None
