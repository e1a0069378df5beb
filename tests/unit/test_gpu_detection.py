"""GPU devices report each GPU's index, name, total and free memory, without torch: NVML or
nvidia-smi for NVIDIA, amdsmi or rocm-smi for AMD. On this machine (no GPU) detection says
"absent" quickly, and ``device: cuda`` is a clear startup error.

The tools' outputs are files under ``tests/data/devices`` (see its README); the driver bindings
(``pynvml``, ``amdsmi``) are replaced by clearly named test doubles in ``sys.modules``.
"""

from __future__ import annotations

import sys
import time
import types
from pathlib import Path
from typing import Any

import pytest

from inferflux_core.config import ModelConfig
from inferflux_core.contracts import GpuMemory
from inferflux_core.engine.backend_choice import choose_backend
from inferflux_core.engine.devices import select_device
from inferflux_core.errors import ConfigError
from inferflux_core.plugins import PluginHost
from inferflux_plugins import devices
from inferflux_plugins.backends import llama_cpp
from inferflux_plugins.devices import cuda, rocm
from inferflux_plugins.devices.cuda import CudaContext, parse_nvidia_smi
from inferflux_plugins.devices.rocm import RocmContext, parse_rocm_smi_json

DATA = Path(__file__).resolve().parents[1] / "data" / "devices"
MIB = 1024 * 1024
GIB = 1024 * MIB


@pytest.fixture(autouse=True)
def _every_gpu_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("HIP_VISIBLE_DEVICES", raising=False)


# -- NVIDIA ------------------------------------------------------------------------------------


def test_nvidia_smi_output_gives_index_name_total_and_free_memory() -> None:
    gpus = parse_nvidia_smi((DATA / "nvidia-smi-query-gpu-2x-h100.csv").read_text())
    assert gpus == [
        GpuMemory(0, "NVIDIA H100 80GB HBM3", 81559 * MIB, 81004 * MIB),
        GpuMemory(1, "NVIDIA H100 80GB HBM3", 81559 * MIB, 2215 * MIB),
    ]


def test_nvidia_smi_free_memory_not_available_is_unknown_not_zero() -> None:
    (gpu,) = parse_nvidia_smi((DATA / "nvidia-smi-query-gpu-na.csv").read_text())
    assert gpu.name == "NVIDIA A100-SXM4-40GB MIG 3g.20gb"
    assert (gpu.total_bytes, gpu.free_bytes) == (40960 * MIB, None)


def test_nvidia_smi_noise_is_no_gpu() -> None:
    assert parse_nvidia_smi("") == []
    assert parse_nvidia_smi("No devices were found\n") == []
    assert parse_nvidia_smi("GPU 0, name, 1, 2\n") == []


class _NvmlDouble(types.ModuleType):
    """A test double of ``pynvml`` (nvidia-ml-py) for two 24 GiB GPUs."""

    def __init__(self, fail_init: bool = False) -> None:
        super().__init__("pynvml")
        self.fail_init = fail_init
        self.shut_down = False

    def nvmlInit(self) -> None:
        if self.fail_init:
            raise RuntimeError("NVML Shared Library Not Found")

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetName(self, handle: int) -> bytes:
        return b"NVIDIA GeForce RTX 4090"  # older bindings return bytes

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
        return types.SimpleNamespace(total=24 * GIB, free=(20 - 10 * handle) * GIB)

    def nvmlShutdown(self) -> None:
        self.shut_down = True


def test_nvml_reports_every_gpu_and_is_shut_down(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = _NvmlDouble()
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    info = CudaContext().detect()
    assert info.present and info.count == 2 and info.details["source"] == "nvml"
    assert info.gpus == (
        GpuMemory(0, "NVIDIA GeForce RTX 4090", 24 * GIB, 20 * GIB),
        GpuMemory(1, "NVIDIA GeForce RTX 4090", 24 * GIB, 10 * GIB),
    )
    assert info.memory_bytes == 24 * GIB
    assert nvml.shut_down


def test_an_nvml_without_its_driver_library_falls_through_to_the_next_probe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _NvmlDouble(fail_init=True))
    assert cuda.gpus_from_nvml() is None
    monkeypatch.setattr(cuda, "gpus_from_nvidia_smi", lambda: None)
    monkeypatch.setattr(cuda, "gpus_from_proc", lambda: None)
    monkeypatch.setattr(cuda, "gpus_from_libcuda", lambda: None)
    info = CudaContext().detect()
    assert not info.present and "no NVIDIA GPU" in info.reason


def test_cuda_visible_devices_picks_reorders_and_renumbers_the_gpus(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _NvmlDouble())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    (gpu,) = CudaContext().detect().gpus
    assert (gpu.index, gpu.free_bytes) == (0, 10 * GIB)  # the second GPU, as CUDA numbers it
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,0")
    assert [gpu.free_bytes for gpu in CudaContext().detect().gpus] == [10 * GIB, 20 * GIB]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-8e1f2a3b")  # UUIDs: not filtered here
    assert CudaContext().detect().count == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    info = CudaContext().detect()
    assert not info.present and info.reason == "CUDA_VISIBLE_DEVICES hides all 2 NVIDIA GPU(s)"


# -- AMD -----------------------------------------------------------------------------------------


def test_rocm_smi_json_gives_index_name_total_and_free_memory() -> None:
    gpus = parse_rocm_smi_json((DATA / "rocm-smi-meminfo-productname-2x-mi210.json").read_text())
    assert gpus == [
        GpuMemory(0, "Instinct MI210", 68702699520, 68702699520 - 10747904),
        GpuMemory(1, "Instinct MI210", 68702699520, 68702699520 - 34359738368),
    ]


@pytest.mark.parametrize("text", ["", "not json", "[]", '{"system": {}}', '{"card0": 3}'])
def test_rocm_smi_noise_is_no_gpu(text: str) -> None:
    assert parse_rocm_smi_json(text) == []


def test_rocm_smi_cards_are_ordered_by_number_and_missing_memory_is_unknown() -> None:
    text = '{"card10": {"Card series": "b"}, "card2": {"VRAM Total Memory (B)": "8"}}'
    assert parse_rocm_smi_json(text) == [GpuMemory(2, "AMD GPU", 8, None), GpuMemory(10, "b")]


def _fake_tool(directory: Path, name: str, output: str) -> None:
    script = directory / name
    script.write_text(f"#!/bin/sh\ncat <<'EOF'\n{output}\nEOF\n")
    script.chmod(0o755)


def test_rocm_is_found_through_rocm_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kfd = tmp_path / "kfd"
    kfd.touch()
    tool = (DATA / "rocm-smi-meminfo-productname-2x-mi210.json").read_text()
    _fake_tool(tmp_path, "rocm-smi", tool)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    monkeypatch.setattr(rocm, "KFD", kfd)
    monkeypatch.setitem(sys.modules, "amdsmi", None)
    info = RocmContext().detect()
    assert info.present and info.count == 2 and info.details["source"] == "rocm-smi"
    assert info.gpus[1].free_bytes == 68702699520 - 34359738368


class _AmdSmiDouble(types.ModuleType):
    """A test double of ``amdsmi`` for one 192 GiB GPU with 2 GiB in use."""

    AmdSmiMemoryType = types.SimpleNamespace(VRAM="vram")

    def __init__(self) -> None:
        super().__init__("amdsmi")
        self.shut_down = False

    def amdsmi_init(self) -> None:
        pass

    def amdsmi_get_processor_handles(self) -> list[str]:
        return ["gpu0"]

    def amdsmi_get_gpu_memory_total(self, handle: str, kind: str) -> int:
        return 192 * GIB

    def amdsmi_get_gpu_memory_usage(self, handle: str, kind: str) -> int:
        return 2 * GIB

    def amdsmi_get_gpu_asic_info(self, handle: str) -> dict[str, str]:
        return {"market_name": "AMD Instinct MI300X"}

    def amdsmi_shut_down(self) -> None:
        self.shut_down = True


def test_amdsmi_reports_every_gpu_and_is_shut_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kfd = tmp_path / "kfd"
    kfd.touch()
    monkeypatch.setattr(rocm, "KFD", kfd)
    smi = _AmdSmiDouble()
    monkeypatch.setitem(sys.modules, "amdsmi", smi)
    info = RocmContext().detect()
    assert info.present and info.details["source"] == "amdsmi"
    assert info.gpus == (GpuMemory(0, "AMD Instinct MI300X", 192 * GIB, 190 * GIB),)
    assert smi.shut_down


# -- this machine --------------------------------------------------------------------------------


@pytest.mark.parametrize("context", [CudaContext, RocmContext])
def test_detection_says_absent_quickly_and_cleanly_without_the_gpu(
    context: type[CudaContext] | type[RocmContext],
) -> None:
    started = time.monotonic()
    info = context().detect()
    elapsed = time.monotonic() - started
    if info.present:
        pytest.skip(f"this machine has a {info.kind} GPU: {info.name}")
    assert info.reason and not info.gpus and info.count == 0
    assert elapsed < 2.0
    assert "torch" not in sys.modules


def test_device_cuda_without_a_cuda_gpu_is_a_clear_startup_error() -> None:
    if CudaContext().detect().present:
        pytest.skip("this machine has a CUDA GPU")
    host = PluginHost(autoload=False, extra_plugins=[("devices", devices)])
    with pytest.raises(ConfigError, match="device 'cuda' is not present: no NVIDIA GPU found"):
        select_device(host, "cuda", ("cpu", "cuda"))
    host = PluginHost(
        autoload=False, extra_plugins=[("devices", devices), ("llama_cpp", llama_cpp)]
    )
    for backend in ("auto", "llama_cpp"):
        with pytest.raises(ConfigError, match="device 'cuda' is not present"):
            choose_backend(ModelConfig(backend=backend, device="cuda"), host)
