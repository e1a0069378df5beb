"""The memory estimate from GGUF metadata: per-layer shapes, sliding windows, hostile values,
and the refusal ``check_fits`` gives (GGUF files written here with the ``gguf`` package)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inferflux_core.config import ModelConfig
from inferflux_core.contracts import DeviceInfo
from inferflux_core.engine.memory import (
    ContextSettings,
    ModelMemory,
    check_fits,
    estimate_memory,
    kv_layout,
)
from inferflux_core.engine.memory_check import check_model_memory, estimate_for
from inferflux_core.errors import ConfigError, InsufficientMemoryError, ModelFileError

gguf = pytest.importorskip("gguf")

MIB = 1 << 20
GIB = 1 << 30
#: More layers than the header reader keeps of an ordinary array (SMALL_ARRAY = 64).
LAYERS = 70


def write_gguf(path: Path, fill: Callable[[Any], None], arch: str = "llama") -> Path:
    """A small GGUF with one f32 tensor and whatever metadata ``fill`` adds."""
    writer = gguf.GGUFWriter(str(path), arch)
    fill(writer)
    writer.add_tensor("token_embd.weight", np.zeros((100, 64), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def base_shape(writer: Any, layers: int = LAYERS) -> None:
    writer.add_block_count(layers)
    writer.add_embedding_length(256)
    writer.add_head_count(8)
    writer.add_feed_forward_length(512)
    writer.add_vocab_size(100)


@pytest.fixture
def per_layer_model(tmp_path: Path) -> Path:
    """70 layers whose KV head counts cycle 0..3, with K and V heads of different sizes."""

    def fill(writer: Any) -> None:
        base_shape(writer)
        writer.add_head_count_kv([layer % 4 for layer in range(LAYERS)])
        writer.add_key_length(32)
        writer.add_value_length(48)

    return write_gguf(tmp_path / "per-layer.gguf", fill)


def test_per_layer_kv_heads_are_summed_layer_by_layer(per_layer_model: Path) -> None:
    estimate = estimate_memory(per_layer_model, context_length=1000, max_sequences=3)
    heads = sum(layer % 4 for layer in range(LAYERS))
    assert estimate.kv_bytes_per_token == heads * (32 + 48) * 2  # f16
    # llama.cpp pads 3000 cells to 3072, and each sequence's stream to 1024
    assert (estimate.kv_cells, estimate.kv_streams) == (1024, 3)
    assert estimate.kv_bytes == estimate.kv_bytes_per_token * 1024 * 3
    assert estimate.weights_bytes == 100 * 64 * 4
    assert estimate.total_bytes == sum(
        (
            estimate.weights_bytes,
            estimate.kv_bytes,
            estimate.compute_bytes,
            estimate.output_bytes,
            estimate.overhead_bytes,
        )
    )


def test_kv_type_changes_the_row_size(model_path: Path, per_layer_model: Path) -> None:
    f16 = estimate_memory(model_path, context_length=256, max_sequences=1)
    q8 = estimate_memory(model_path, context_length=256, max_sequences=1, kv_type="q8_0")
    assert q8.kv_bytes_per_token * 64 == f16.kv_bytes_per_token * 34  # 34 bytes per 32 values
    with pytest.raises(ConfigError, match="packs 32 values per block, but layer 1"):
        estimate_memory(per_layer_model, context_length=256, max_sequences=1, kv_type="q8_0")
    with pytest.raises(ConfigError, match="KV cache type 'f8'"):
        estimate_memory(per_layer_model, context_length=256, max_sequences=1, kv_type="f8")


def test_unified_cache_is_one_padded_stream(per_layer_model: Path) -> None:
    assert kv_layout(1000, 3, unified=True) == (3072, 1)
    assert kv_layout(2048, 8, unified=False) == (2048, 8)
    assert kv_layout(16, 1, unified=False) == (256, 1)


def test_sliding_window_layers_are_capped_unless_swa_full(tmp_path: Path) -> None:
    def fill(writer: Any) -> None:
        base_shape(writer, layers=6)
        writer.add_head_count_kv(2)
        writer.add_key_length(64)
        writer.add_value_length(64)
        writer.add_sliding_window(128)
        writer.add_array(
            "llama.attention.sliding_window_pattern", [True, True, False, True, True, False]
        )

    memory = ModelMemory.from_file(write_gguf(tmp_path / "swa.gguf", fill))
    assert memory.shape.swa_layers == (True, True, False, True, True, False)
    row = 2 * 64 * 2 * 2
    full = memory.estimate(4096, 2)
    assert full.kv_bytes == row * 6 * 4096 * 2
    capped = memory.estimate(4096, 2, ContextSettings(swa_full=False, batch_tokens=64))
    # window + micro-batch, padded to 256: 128 + 64 -> 256 cells in each SWA layer's stream
    assert capped.kv_bytes == row * (2 * 4096 + 4 * 256) * 2


def test_default_sliding_window_pattern_of_gemma3(tmp_path: Path) -> None:
    def fill(writer: Any) -> None:
        base_shape(writer, layers=12)
        writer.add_head_count_kv(1)
        writer.add_key_length(64)
        writer.add_value_length(64)
        writer.add_sliding_window(512)

    memory = ModelMemory.from_file(write_gguf(tmp_path / "g3.gguf", fill, arch="gemma3"))
    assert [layer for layer, swa in enumerate(memory.shape.swa_layers) if not swa] == [5, 11]


def test_head_size_defaults_to_embedding_over_heads(tmp_path: Path) -> None:
    def fill(writer: Any) -> None:
        base_shape(writer, layers=4)
        writer.add_head_count_kv(2)

    estimate = estimate_memory(
        write_gguf(tmp_path / "m.gguf", fill), context_length=256, max_sequences=1
    )
    assert estimate.kv_bytes_per_token == 4 * 2 * (256 // 8) * 2 * 2


def test_compute_buffer_grows_with_attention_scores_without_flash_attention(
    per_layer_model: Path,
) -> None:
    memory = ModelMemory.from_file(per_layer_model)
    with_fa = memory.estimate(8192, 1)
    without = memory.estimate(8192, 1, ContextSettings(flash_attention=False))
    assert with_fa.compute_bytes == 512 * 4 * (100 + 3 * 256 + 512)
    assert without.compute_bytes == 512 * 4 * (8192 * (8 + 1) + 3 * 256 + 512)


#: Metadata of a hostile file: (``GGUFWriter`` method, key, value) triples, on top of the
#: base shape when ``base`` is True.
Entries = list[tuple[str, str, Any]]
BLOCKS = ("add_uint32", "llama.block_count", 4)
EMBD = ("add_uint32", "llama.embedding_length", 64)
HEADS = ("add_uint32", "llama.attention.head_count", 2)
HOSTILE: list[tuple[str, bool, Entries, str]] = [
    ("missing block count", False, [EMBD, HEADS], "llama.block_count is missing"),
    (
        "huge block count",
        False,
        [("add_uint64", "llama.block_count", 2**62), EMBD, HEADS],
        "llama.block_count is 4611686018427387904",
    ),
    (
        "negative kv heads",
        True,
        [("add_int32", "llama.attention.head_count_kv", -1)],
        "head_count_kv is -1",
    ),
    (
        "kv heads array too short",
        True,
        [("add_array", "llama.attention.head_count_kv", [1, 1])],
        "has 2 items for 4 layers",
    ),
    (
        "kv heads array of floats",
        True,
        [("add_array", "llama.attention.head_count_kv", [1.5] * 4)],
        "not an integer",
    ),
    (
        "kv heads array longer than any model",
        True,
        [("add_array", "llama.attention.head_count_kv", [1] * 600)],
        "has 600 items for 4 layers",
    ),
    (
        "huge head size",
        True,
        [("add_uint32", "llama.attention.key_length", 2**31)],
        "key_length is 2147483648",
    ),
    (
        "string embedding length",
        False,
        [BLOCKS, ("add_string", "llama.embedding_length", "wide"), HEADS],
        "embedding_length is 'wide'",
    ),
    ("no heads", False, [BLOCKS, EMBD], "head_count is missing"),
    ("no vocabulary", False, [BLOCKS, EMBD, HEADS], "vocab_size and tokenizer.ggml.tokens"),
    (
        "boolean sliding window",
        True,
        [("add_bool", "llama.attention.sliding_window", True)],
        "sliding_window is True",
    ),
]


@pytest.mark.parametrize(
    ("case", "base", "entries", "message"), HOSTILE, ids=[c[0] for c in HOSTILE]
)
def test_hostile_metadata_is_a_clear_error(
    tmp_path: Path, case: str, base: bool, entries: Entries, message: str
) -> None:
    def fill(writer: Any) -> None:
        if base:
            base_shape(writer, 4)
        for method, key, value in entries:
            getattr(writer, method)(key, value)

    path = write_gguf(tmp_path / "hostile.gguf", fill)
    started = time.perf_counter()
    with pytest.raises(ModelFileError) as caught:
        estimate_memory(path, context_length=2048, max_sequences=8)
    assert time.perf_counter() - started < 0.5
    assert message in caught.value.message
    assert str(path) in caught.value.message


def test_not_a_gguf_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.gguf"
    path.write_text("not a model")
    with pytest.raises(ModelFileError, match="not a valid GGUF file"):
        estimate_memory(path, context_length=2048, max_sequences=8)


def test_load_check_skips_files_it_cannot_size_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def fill(writer: Any) -> None:
        writer.add_embedding_length(64)

    cpu = DeviceInfo(kind="cpu", present=True)
    config = ModelConfig(name="odd", source="unused")
    unsized = write_gguf(tmp_path / "odd.gguf", fill)
    with caplog.at_level(logging.WARNING):
        assert check_model_memory(config, unsized, cpu) is None
    assert "memory check skipped" in caplog.text and "block_count is missing" in caplog.text
    corpus = tmp_path / "corpus.txt"  # another backend's model file
    corpus.write_text("a bigram corpus")
    assert check_model_memory(config, corpus, cpu) is None


@pytest.mark.parametrize(
    ("context", "sequences"), [(0, 1), (2048, 0), (2**40, 1), (2048, 10**9), (True, 1)]
)
def test_plan_out_of_bounds_is_refused_before_arithmetic(
    per_layer_model: Path, context: int, sequences: int
) -> None:
    with pytest.raises(ConfigError, match="must be an integer from 1 to"):
        estimate_memory(per_layer_model, context_length=context, max_sequences=sequences)


def test_most_sequences_is_the_largest_that_fits(per_layer_model: Path) -> None:
    memory = ModelMemory.from_file(per_layer_model)
    free = memory.estimate(2048, 5).total_bytes + 1
    assert memory.most_sequences(2048, free) == 5
    assert memory.most_sequences(2048, 10) == 0
    assert memory.most_sequences(2048, 1 << 60, limit=256) == 256


# -- check_fits ------------------------------------------------------------------------------


def test_check_fits_passes_when_it_fits(model_path: Path) -> None:
    estimate = estimate_memory(model_path, context_length=2048, max_sequences=8)
    check_fits(estimate, estimate.total_bytes, model="smol")


def test_refusal_names_both_figures_and_how_many_sequences_fit(model_path: Path) -> None:
    estimate = estimate_memory(model_path, context_length=2048, max_sequences=8)
    free = estimate.total_bytes - 3 * estimate.kv_bytes_per_sequence
    with pytest.raises(InsufficientMemoryError) as caught:
        check_fits(estimate, free, model="smol", device="the cpu device")
    message = caught.value.message
    assert "model 'smol' does not fit" in message
    assert "578.79 MiB" in message  # needed: the estimate's total
    assert f"the cpu device has {free / MIB:.2f} MiB free" in message
    assert "360.00 MiB for 8 x 2048 tokens" in message
    assert "about 5 sequences would fit" in message
    assert ModelMemory.from_file(model_path).most_sequences(2048, free) == 5
    assert "max_sequences or context_length" in message
    error = caught.value
    assert error.status == 507
    assert error.to_body()["error"]["code"] == "insufficient_memory"
    assert error.to_body()["error"]["type"] == "server_error"


def test_refusal_when_not_one_sequence_fits_suggests_a_smaller_quantization(
    model_path: Path,
) -> None:
    estimate = estimate_memory(model_path, context_length=65536, max_sequences=4)
    with pytest.raises(InsufficientMemoryError) as caught:
        check_fits(estimate, 200 * MIB, model="smol")
    message = caught.value.message
    assert "GiB" in message and "200.00 MiB free" in message
    assert "lower context_length" in message and "smaller quantization" in message
    assert "92.10 MiB" in message  # the weights alone


def test_a_draft_model_counts_with_its_model(model_path: Path) -> None:
    config = ModelConfig(context_length=512, max_sequences=2)
    alone = estimate_for(config, model_path)
    both = estimate_for(config, model_path, draft_path=model_path)
    assert alone is not None and both is not None
    assert both.weights_bytes == 2 * alone.weights_bytes
    assert both.kv_bytes == 2 * alone.kv_bytes
    assert both.total_bytes == 2 * alone.total_bytes
    assert both.kv_bytes_per_token == alone.kv_bytes_per_token
