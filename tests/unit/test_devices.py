"""Device detection: the CPU is always found; absent GPUs say why; probes never raise."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from inferflux_core.contracts import DeviceContext, usable_cores
from inferflux_core.plugins import PluginHost
from inferflux_plugins import devices
from inferflux_plugins.devices import cpu, rocm
from inferflux_plugins.devices.cpu import CpuContext, cpu_has_amx
from inferflux_plugins.devices.cuda import CudaContext
from inferflux_plugins.devices.metal import MetalContext
from inferflux_plugins.devices.rocm import RocmContext

DATA = Path(__file__).resolve().parents[1] / "data" / "devices"
MIB = 1024 * 1024


def fake_tool(directory: Path, name: str, output: str) -> None:
    """An executable ``name`` in ``directory`` that prints ``output``."""
    script = directory / name
    script.write_text(f"#!/bin/sh\ncat <<'EOF'\n{output}\nEOF\n")
    script.chmod(0o755)


def test_the_plugin_registers_four_device_kinds() -> None:
    host = PluginHost(autoload=False, extra_plugins=[("devices", devices)])
    assert host.names("device_contexts") == ["cpu", "cuda", "metal", "rocm"]
    for kind in host.names("device_contexts"):
        context = host.get("device_contexts", kind)
        assert issubclass(context, DeviceContext)
        assert context.kind == kind


def test_priorities_prefer_gpus_over_the_cpu() -> None:
    assert CudaContext.priority > RocmContext.priority > MetalContext.priority
    assert MetalContext.priority > CpuContext.priority == 0


def test_the_cpu_is_always_present_with_cores_memory_and_isa_details() -> None:
    info = CpuContext().detect()
    assert info.present and info.kind == "cpu"
    assert info.cores >= 1
    assert info.memory_bytes > 0
    assert info.name
    assert isinstance(info.details["amx"], bool)
    assert isinstance(info.details["avx2"], bool)
    assert isinstance(info.details["avx512f"], bool)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({"avx2", "avx512f"}, False),
        ({"avx2", "amx_tile"}, True),
        ({"amx_bf16"}, True),
        ({"amx_int8", "avx512f"}, True),
        (set(), False),
    ],
)
def test_amx_is_detected_from_any_amx_flag(flags: set[str], expected: bool) -> None:
    assert cpu_has_amx(frozenset(flags)) is expected


def test_amx_check_of_this_machine_matches_its_cpu_flags() -> None:
    assert cpu_has_amx() is bool(cpu.cpu_flags() & cpu.AMX_FLAGS)


@pytest.mark.parametrize(
    ("flags", "features"),
    [
        ({"fpu", "avx2", "avx512f", "amx_int8"}, {"avx2", "avx512f", "amx"}),
        ({"avx2", "sse4_2"}, {"avx2"}),
        ({"amx_tile"}, {"amx"}),
        (set(), set()),
    ],
)
def test_cpu_flags_become_device_features(flags: set[str], features: set[str]) -> None:
    assert cpu.cpu_features(frozenset(flags)) == frozenset(features)


def test_the_cpu_reports_its_isa_extensions_as_features_a_backend_can_read() -> None:
    info = CpuContext().detect()
    assert info.features == cpu.cpu_features(cpu.cpu_flags())
    assert ("amx" in info.features) is cpu_has_amx()
    for name in ("amx", "avx2", "avx512f"):
        assert info.details[name] is (name in info.features)


def test_usable_cores_is_the_affinity_mask_and_the_cpu_devices_cores() -> None:
    expected = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    assert usable_cores() >= 1
    assert expected is None or usable_cores() == expected
    assert CpuContext().detect().cores == usable_cores()


@pytest.mark.parametrize("context", [CudaContext, RocmContext, MetalContext])
def test_every_gpu_context_reports_presence_or_a_reason(context: type[DeviceContext]) -> None:
    info = context().detect()
    assert info.kind == context.kind
    assert info.present or info.reason
    assert "torch" not in sys.modules


def test_cuda_is_found_through_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_tool(tmp_path, "nvidia-smi", (DATA / "nvidia-smi-query-gpu-2x-h100.csv").read_text())
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setitem(sys.modules, "pynvml", None)  # no NVML binding: nvidia-smi answers
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    info = CudaContext().detect()
    assert info.present
    assert info.count == 2
    assert info.name == "NVIDIA H100 80GB HBM3"
    assert info.memory_bytes == 81559 * MIB
    assert [gpu.free_bytes for gpu in info.gpus] == [81004 * MIB, 2215 * MIB]
    assert info.details["source"] == "nvidia-smi"


def test_rocm_gpus_come_from_the_kfd_topology(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kfd = tmp_path / "kfd"
    kfd.touch()
    nodes = tmp_path / "nodes"
    (nodes / "0").mkdir(parents=True)
    (nodes / "0" / "properties").write_text("cpu_cores_count 16\nsimd_count 0\n")
    gpu = nodes / "1"
    (gpu / "mem_banks" / "0").mkdir(parents=True)
    (gpu / "properties").write_text("simd_count 304\n")
    (gpu / "name").write_text("gfx942\n")
    (gpu / "mem_banks" / "0" / "properties").write_text("size_in_bytes 206141652992\n")
    monkeypatch.setattr(rocm, "KFD", kfd)
    monkeypatch.setattr(rocm, "TOPOLOGY", nodes)
    monkeypatch.setattr(rocm, "gpus_from_amdsmi", lambda: None)
    monkeypatch.setattr(rocm, "gpus_from_rocm_smi", lambda: None)
    monkeypatch.delenv("HIP_VISIBLE_DEVICES", raising=False)
    info = RocmContext().detect()
    assert info.present
    assert (info.name, info.count, info.memory_bytes) == ("gfx942", 1, 206141652992)


def test_metal_is_present_on_apple_silicon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("platform.system", lambda: "Darwin")
    monkeypatch.setattr("platform.machine", lambda: "arm64")
    fake_tool(tmp_path, "sysctl", "17179869184")
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    info = MetalContext().detect()
    assert info.present
    assert info.memory_bytes == 17179869184
