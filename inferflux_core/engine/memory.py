"""How much memory a GGUF model takes once llama.cpp has loaded it, and whether that fits.

:func:`estimate_memory` reads the model's header (never its tensor data) and sizes what the
``llama_cpp`` backend makes llama.cpp allocate for ``context_length x max_sequences``:

- **weights**: the file's tensor data section, byte for byte what llama.cpp maps or copies;
- **KV cache**: K and V rows of every layer (``head_count_kv x key_length`` and
  ``x value_length`` elements of the cache type per token), for llama.cpp's cells: the
  context padded to 256 per sequence stream, as ``llama_context`` rounds it; sliding-window
  layers sized by their window when ``swa_full`` is off;
- **compute**: the graph buffer llama.cpp reserves for one micro-batch (its largest tensors:
  the logits of every token, or without flash attention the attention scores), plus the
  output buffer of one row of logits per sequence;
- **overhead**: llama.cpp's own structures (the vocabulary above all), calibrated.

The figures and their measured error are in docs/planning.md. :func:`check_fits` turns an
estimate and a free-memory figure (:func:`~inferflux_core.engine.device_memory.free_memory`)
into a refusal that names both. Nothing here imports llama.cpp.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from inferflux_core.engine.device_memory import format_bytes
from inferflux_core.engine.model_shape import ModelShape, read_model_shape
from inferflux_core.errors import ConfigError, InsufficientMemoryError
from inferflux_core.gguf_check import GGUFHeader, read_gguf_header
from inferflux_core.gguf_format import GGML_TYPES

#: KV cache types llama.cpp accepts (``--cache-type-k/-v``), by name: their ggml type ids.
KV_TYPES = {
    "f32": 0,
    "f16": 1,
    "bf16": 30,
    "q8_0": 8,
    "q4_0": 2,
    "q4_1": 3,
    "q5_0": 6,
    "q5_1": 7,
    "iq4_nl": 20,
}
#: llama.cpp pads the context (and each sequence's stream) to a multiple of this many cells.
KV_PAD = 256
#: Bytes of one f32 activation.
F32 = 4
#: llama.cpp's fixed structures besides the per-token-of-vocabulary part (calibrated).
BASE_OVERHEAD = 16 * 1024 * 1024
#: Host bytes per byte of GGUF metadata (the vocabulary as llama.cpp holds it; calibrated).
METADATA_OVERHEAD_FACTOR = 4
#: Bounds on the planned sizes: past these the arithmetic means nothing.
MAX_CONTEXT = 1 << 24
MAX_SEQUENCES = 1 << 16
MAX_BATCH = 1 << 16


@dataclass(frozen=True, slots=True)
class ContextSettings:
    """The llama.cpp context settings the estimate follows, as the ``llama_cpp`` backend sets
    them: ``batch_tokens`` (its ``batch_size`` option), flash attention on (``auto`` turns it
    on wherever llama.cpp supports it), separate KV streams per sequence, full-size
    sliding-window caches (llama.cpp's ``swa_full`` default), and the K/V cache type."""

    batch_tokens: int = 512
    flash_attention: bool = True
    kv_unified: bool = False
    swa_full: bool = True
    kv_type: str = "f16"


@dataclass(frozen=True, slots=True)
class MemoryEstimate:
    """What a model takes loaded for ``context_length x max_sequences``, in bytes.

    ``kv_bytes_per_token`` is one token's K and V in every layer; ``kv_cells`` the cells of
    one KV stream (the context rounded up as llama.cpp rounds it) and ``kv_streams`` how many
    streams there are (one per sequence, or one shared).
    """

    path: Path
    architecture: str
    context_length: int
    max_sequences: int
    kv_type: str
    weights_bytes: int
    kv_bytes_per_token: int
    kv_cells: int
    kv_streams: int
    kv_bytes: int
    compute_bytes: int
    output_bytes: int
    overhead_bytes: int
    settings: ContextSettings = field(default_factory=ContextSettings)

    @property
    def total_bytes(self) -> int:
        """Everything: weights, KV cache, compute and output buffers, overhead."""
        return (
            self.weights_bytes
            + self.kv_bytes
            + self.compute_bytes
            + self.output_bytes
            + self.overhead_bytes
        )

    @property
    def kv_bytes_per_sequence(self) -> int:
        """The KV cache one more sequence adds (its stream, or its share of a shared one)."""
        return self.kv_bytes // max(1, self.max_sequences)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``path`` as a string, ``total_bytes`` included)."""
        data = asdict(self)
        data["path"] = str(self.path)
        data["total_bytes"] = self.total_bytes
        return data


@dataclass(frozen=True, slots=True)
class ModelMemory:
    """A model's shape and file sizes, read once; :meth:`estimate` for any context plan."""

    path: Path
    shape: ModelShape
    weights_bytes: int
    metadata_bytes: int

    @classmethod
    def from_header(cls, header: GGUFHeader) -> ModelMemory:
        """From an already checked header (ModelFileError for metadata it cannot size)."""
        return cls(header.path, read_model_shape(header), header.data_size, header.data_offset)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> ModelMemory:
        """Read ``path``'s header (never its tensor data)."""
        return cls.from_header(read_gguf_header(path))

    def estimate(
        self,
        context_length: int,
        max_sequences: int,
        settings: ContextSettings | None = None,
    ) -> MemoryEstimate:
        """The memory for ``max_sequences`` sequences of ``context_length`` tokens each."""
        settings = settings or ContextSettings()
        _check_plan(context_length, max_sequences, settings)
        shape = self.shape
        n_ctx = context_length * max_sequences
        cells, streams = kv_layout(context_length, max_sequences, settings.kv_unified)
        n_ubatch = min(n_ctx, max(settings.batch_tokens, max_sequences))
        swa_cells = cells
        if shape.sliding_window and not settings.swa_full:
            window_cells = shape.sliding_window * (max_sequences if settings.kv_unified else 1)
            swa_cells = min(cells, _pad(window_cells + n_ubatch, KV_PAD))
        per_token, kv_bytes = 0, 0
        for layer, row in enumerate(kv_row_bytes(shape, settings.kv_type)):
            per_token += row
            layer_cells = swa_cells if shape.swa_layers[layer] else cells
            kv_bytes += row * layer_cells * streams
        return MemoryEstimate(
            path=self.path,
            architecture=shape.architecture,
            context_length=context_length,
            max_sequences=max_sequences,
            kv_type=settings.kv_type,
            weights_bytes=self.weights_bytes,
            kv_bytes_per_token=per_token,
            kv_cells=cells,
            kv_streams=streams,
            kv_bytes=kv_bytes,
            compute_bytes=compute_buffer_bytes(shape, n_ubatch, cells, settings.flash_attention),
            output_bytes=shape.n_vocab * F32 * max_sequences,
            overhead_bytes=BASE_OVERHEAD + METADATA_OVERHEAD_FACTOR * self.metadata_bytes,
            settings=settings,
        )

    def most_sequences(
        self,
        context_length: int,
        free_bytes: int,
        settings: ContextSettings | None = None,
        limit: int = 256,
    ) -> int:
        """The most sequences of ``context_length`` tokens whose estimate fits in
        ``free_bytes`` (0: not even one), at most ``limit``."""
        low, high = 0, max(0, limit)
        while low < high:  # the total grows with the sequences: bisect
            middle = (low + high + 1) // 2
            if self.estimate(context_length, middle, settings).total_bytes <= free_bytes:
                low = middle
            else:
                high = middle - 1
        return low


def estimate_memory(
    path: str | os.PathLike[str],
    *,
    context_length: int,
    max_sequences: int,
    kv_type: str = "f16",
    settings: ContextSettings | None = None,
) -> MemoryEstimate:
    """The memory the model at ``path`` takes loaded by llama.cpp for ``max_sequences``
    sequences of ``context_length`` tokens, from its GGUF header alone.

    ``kv_type`` is the K/V cache type (``f16`` unless llama.cpp is told otherwise);
    ``settings`` the rest of the context (the ``llama_cpp`` backend's defaults when None).
    Raises :class:`~inferflux_core.errors.ModelFileError` for a file or metadata it cannot
    size, :class:`~inferflux_core.errors.ConfigError` for a plan out of bounds.
    """
    settings = replace(settings or ContextSettings(), kv_type=kv_type)
    return ModelMemory.from_file(path).estimate(context_length, max_sequences, settings)


def kv_layout(context_length: int, max_sequences: int, unified: bool) -> tuple[int, int]:
    """``(cells per stream, streams)`` llama.cpp gives ``max_sequences x context_length``.

    It pads the whole context to :data:`KV_PAD`; with one stream per sequence it then pads
    each stream's share again (``llama_context``'s constructor).
    """
    n_ctx = _pad(context_length * max_sequences, KV_PAD)
    if unified:
        return n_ctx, 1
    return _pad(n_ctx // max_sequences, KV_PAD), max_sequences


def kv_row_bytes(shape: ModelShape, kv_type: str) -> list[int]:
    """Each layer's bytes of K plus V for one token, in ``kv_type``."""
    type_id = KV_TYPES.get(kv_type)
    if type_id is None:
        raise ConfigError(
            f"KV cache type {kv_type!r} is not one llama.cpp offers ({', '.join(KV_TYPES)})",
            param="kv_type",
        )
    block, block_bytes = GGML_TYPES[type_id]
    rows = []
    for layer, heads in enumerate(shape.kv_heads):
        total = 0
        for width in (heads * shape.key_length, heads * shape.value_length):
            if width % block:
                raise ConfigError(
                    f"KV cache type {kv_type} packs {block} values per block, but layer "
                    f"{layer} of {shape.architecture} has {width} per token; use f16",
                    param="kv_type",
                )
            total += width // block * block_bytes
        rows.append(total)
    return rows


def compute_buffer_bytes(
    shape: ModelShape, n_ubatch: int, kv_cells: int, flash_attention: bool
) -> int:
    """The graph buffer llama.cpp reserves for a micro-batch of ``n_ubatch`` tokens.

    The allocator reuses memory between the graph's steps, so the buffer is its widest point
    plus what stays alive through it: the logits of every token of the micro-batch (the
    vocabulary wide), or without flash attention the attention scores (one row of
    ``kv_cells`` per head, plus the mask). The live rest, three embedding-wide and one
    feed-forward-wide f32 rows per token, was fitted to llama.cpp's logged buffer sizes.
    """
    live = 3 * shape.n_embd + shape.n_ff
    widest = shape.n_vocab + live
    if not flash_attention:
        widest = max(widest, kv_cells * (shape.n_head + 1) + live)
    return n_ubatch * F32 * widest


def check_fits(
    estimate: MemoryEstimate,
    free_bytes: int,
    *,
    model: str,
    device: str = "the device",
) -> None:
    """Raise :class:`~inferflux_core.errors.InsufficientMemoryError` if ``estimate`` needs
    more than ``free_bytes``; its message names both figures, in GiB or MiB, how many
    sequences would fit, and what to change."""
    needed = estimate.total_bytes
    if needed <= free_bytes:
        return
    fixed = needed - estimate.kv_bytes - estimate.output_bytes
    per_sequence = estimate.kv_bytes_per_sequence + estimate.output_bytes // max(
        1, estimate.max_sequences
    )
    fitting = max(0, (free_bytes - fixed) // per_sequence) if per_sequence else 0
    fitting = min(fitting, estimate.max_sequences - 1)
    if fitting:
        advice = (
            f"at context_length {estimate.context_length}, about {fitting} sequence"
            f"{'s' if fitting > 1 else ''} would fit: lower max_sequences or context_length"
        )
    else:
        advice = (
            "not even one sequence fits: lower context_length, or use a smaller quantization "
            f"of the model (its weights alone take {format_bytes(estimate.weights_bytes)})"
        )
    raise InsufficientMemoryError(
        f"model {model!r} does not fit: it needs about {format_bytes(needed)} "
        f"(weights {format_bytes(estimate.weights_bytes)}, KV cache "
        f"{format_bytes(estimate.kv_bytes)} for {estimate.max_sequences} x "
        f"{estimate.context_length} tokens, compute {format_bytes(estimate.compute_bytes)}) "
        f"but {device} has {format_bytes(max(0, free_bytes))} free; {advice}",
        param="model",
    )


def _pad(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _check_plan(context_length: int, max_sequences: int, settings: ContextSettings) -> None:
    """Bound the plan before any arithmetic."""
    for name, value, high in (
        ("context_length", context_length, MAX_CONTEXT),
        ("max_sequences", max_sequences, MAX_SEQUENCES),
        ("batch_tokens", settings.batch_tokens, MAX_BATCH),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
            raise ConfigError(
                f"{name} must be an integer from 1 to {high}, not {value!r}", param=name
            )
