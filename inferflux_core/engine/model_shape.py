"""A model's attention shape as its GGUF metadata states it, checked before any arithmetic.

The memory estimate (:mod:`inferflux_core.engine.memory`) needs what llama.cpp reads from the
same keys: layer count, attention heads and KV heads (one number, or one per layer), key and
value head sizes, embedding and feed-forward widths, vocabulary size, and which layers attend
through a sliding window. Every value is bounded here (llama.cpp's own limits, or generous
ones where it has none), so a hostile file gives a clear :class:`ModelFileError`, never an
overflow or a huge allocation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from inferflux_core.errors import ModelFileError
from inferflux_core.gguf_check import ArrayInfo, GGUFHeader, MetadataValue, architecture
from inferflux_core.gguf_format import MAX_LAYERS

#: Bounds on the sizes read from metadata (far above any real model, far below overflow).
MAX_HEADS = 1 << 16
MAX_HEAD_SIZE = 1 << 16
MAX_WIDTH = 1 << 24
MAX_VOCAB = 1 << 26
MAX_WINDOW = 1 << 31
#: llama.cpp's built-in sliding-window layer patterns for architectures whose GGUFs give a
#: window but no ``sliding_window_pattern``: every ``n``-th layer attends fully (the rest
#: through the window), as ``load_swa_pattern`` in llama.cpp's model files sets them.
DEFAULT_SWA_PATTERNS = {
    "gemma2": 2,
    "gemma3": 6,
    "gemma3n": 5,
    "gemma-embedding": 6,
    "cohere2": 4,
    "exaone4": 4,
    "llama4": 4,
}


@dataclass(frozen=True, slots=True)
class ModelShape:
    """What the memory estimate needs to know of a model, one entry per layer where it varies.

    ``kv_heads[i]`` is 0 for a layer with no KV cache (a recurrent layer of a hybrid model).
    ``sliding_window`` is the window of the layers where ``swa_layers[i]`` is True, or 0.
    """

    architecture: str
    n_layers: int
    n_embd: int
    n_ff: int
    n_vocab: int
    n_head: int
    kv_heads: tuple[int, ...]
    key_length: int
    value_length: int
    sliding_window: int = 0
    swa_layers: tuple[bool, ...] = ()


def read_model_shape(header: GGUFHeader) -> ModelShape:
    """The attention shape ``header`` states; ModelFileError naming the key when one is
    missing, of the wrong type, or out of bounds."""
    reader = _ShapeReader(header)
    return reader.shape()


class _ShapeReader:
    """Reads and bounds the ``<architecture>.*`` keys of one header."""

    def __init__(self, header: GGUFHeader) -> None:
        self.header = header
        arch = architecture(header)
        if not arch:
            raise self.fail("general.architecture is missing")
        self.arch = arch

    def fail(self, problem: str) -> ModelFileError:
        """The error for ``problem``, naming the file."""
        return ModelFileError(
            f"cannot estimate the memory of {self.header.path}: {problem} in its GGUF metadata"
        )

    def shape(self) -> ModelShape:
        """Every value, read and checked."""
        n_layers = self.scalar("block_count", 1, MAX_LAYERS)
        n_embd = self.scalar("embedding_length", 1, MAX_WIDTH)
        heads = self.per_layer("attention.head_count", n_layers, 0, MAX_HEADS)
        if heads is None:
            raise self.fail(f"{self.arch}.attention.head_count is missing")
        kv_heads = self.per_layer("attention.head_count_kv", n_layers, 0, MAX_HEADS) or heads
        n_head = max(heads)
        default_head_size = n_embd // n_head if n_head else 0
        key_length = self.scalar("attention.key_length", 0, MAX_HEAD_SIZE, default_head_size)
        value_length = self.scalar("attention.value_length", 0, MAX_HEAD_SIZE, default_head_size)
        if any(kv_heads) and not (key_length and value_length):
            raise self.fail(f"{self.arch}.attention.key_length is missing (and head_count is 0)")
        n_ff = max(self.per_layer("feed_forward_length", n_layers, 0, MAX_WIDTH) or (0,))
        window = self.scalar("attention.sliding_window", 0, MAX_WINDOW, 0)
        return ModelShape(
            architecture=self.arch,
            n_layers=n_layers,
            n_embd=n_embd,
            n_ff=n_ff,
            n_vocab=self.vocab_size(),
            n_head=n_head,
            kv_heads=kv_heads,
            key_length=key_length,
            value_length=value_length,
            sliding_window=window,
            swa_layers=self.swa_layers(n_layers) if window else (False,) * n_layers,
        )

    # -- values ----------------------------------------------------------------------------

    def value(self, name: str) -> MetadataValue | None:
        """``<architecture>.<name>``, or None."""
        return self.header.metadata.get(f"{self.arch}.{name}")

    def checked_int(self, key: str, value: object, low: int, high: int) -> int:
        """``value`` as an integer in ``[low, high]``."""
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(f"{key} is {_describe(value)}, not an integer")
        if not low <= value <= high:
            raise self.fail(f"{key} is {value}, outside {low} to {high}")
        return value

    def scalar(self, name: str, low: int, high: int, default: int | None = None) -> int:
        """An integer key; ``default`` when it is absent (absent and no default: an error)."""
        key = f"{self.arch}.{name}"
        value = self.value(name)
        if value is None:
            if default is None:
                raise self.fail(f"{key} is missing")
            return default
        return self.checked_int(key, value, low, high)

    def per_layer(self, name: str, n_layers: int, low: int, high: int) -> tuple[int, ...] | None:
        """A key that is one integer for every layer, or one per layer; None when absent."""
        key = f"{self.arch}.{name}"
        value = self.value(name)
        if value is None:
            return None
        if isinstance(value, list | ArrayInfo):
            items = self.layer_array(key, value, n_layers)
            return tuple(self.checked_int(f"{key}[{i}]", v, low, high) for i, v in enumerate(items))
        return (self.checked_int(key, value, low, high),) * n_layers

    def layer_array(
        self, key: str, value: list[int | float | bool | str] | ArrayInfo, n_layers: int
    ) -> Sequence[object]:
        """An array with one item per layer."""
        length = value.length if isinstance(value, ArrayInfo) else len(value)
        if length != n_layers or isinstance(value, ArrayInfo):
            raise self.fail(f"{key} has {length} items for {n_layers} layers")
        return value

    def vocab_size(self) -> int:
        """``<architecture>.vocab_size``, else the length of ``tokenizer.ggml.tokens``."""
        if self.value("vocab_size") is not None:
            return self.scalar("vocab_size", 1, MAX_VOCAB)
        tokens = self.header.metadata.get("tokenizer.ggml.tokens")
        length = tokens.length if isinstance(tokens, ArrayInfo) else None
        if isinstance(tokens, list):
            length = len(tokens)
        if not length:
            raise self.fail(f"{self.arch}.vocab_size and tokenizer.ggml.tokens are missing")
        return self.checked_int("tokenizer.ggml.tokens", length, 1, MAX_VOCAB)

    def swa_layers(self, n_layers: int) -> tuple[bool, ...]:
        """Which layers use the sliding window: ``sliding_window_pattern`` (one flag per layer,
        or ``n``: every ``n``-th layer attends fully), else llama.cpp's default for the
        architecture, else none known (every layer counted as full attention)."""
        key = f"{self.arch}.attention.sliding_window_pattern"
        pattern = self.value("attention.sliding_window_pattern")
        if isinstance(pattern, list | ArrayInfo):
            flags = self.layer_array(key, pattern, n_layers)
            return tuple(
                bool(self.checked_int(f"{key}[{i}]", int(f) if isinstance(f, bool) else f, 0, 1))
                for i, f in enumerate(flags)
            )
        if pattern is None:
            every = DEFAULT_SWA_PATTERNS.get(self.arch, 1)
        else:
            every = self.checked_int(key, pattern, 0, MAX_LAYERS)
        return tuple(every == 0 or layer % every < every - 1 for layer in range(n_layers))


def _describe(value: object) -> str:
    """A short description of a metadata value, for an error message."""
    if isinstance(value, ArrayInfo):
        return f"an array of {value.length} {value.item_type} items"
    if isinstance(value, list):
        return f"an array of {len(value)} items"
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:40]}…"
