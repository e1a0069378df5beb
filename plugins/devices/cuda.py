"""NVIDIA GPUs with their total and free memory, never through torch: NVML (the
``nvidia-ml-py`` package's ``pynvml``) if it imports, else ``nvidia-smi``; without either, the
driver's /proc entries or libcuda still say which GPUs there are."""

from __future__ import annotations

import contextlib
import ctypes
from pathlib import Path

from inferflux_core.contracts import DeviceContext, DeviceInfo, GpuMemory
from inferflux_plugins.devices._probe import (
    MIB,
    import_optional,
    parse_key_values,
    read_text,
    run_command,
    to_int,
    visible_device,
)

PROC_GPUS = Path("/proc/driver/nvidia/gpus")
NVIDIA_SMI_QUERY = [
    "nvidia-smi",
    "--query-gpu=index,name,memory.total,memory.free",
    "--format=csv,noheader,nounits",
]


def gpus_from_nvml() -> list[GpuMemory] | None:
    """GPUs NVML reports, or None when ``pynvml`` is missing or the driver is not there."""
    nvml = import_optional("pynvml")
    if nvml is None:
        return None
    try:
        nvml.nvmlInit()
    except Exception:
        return None
    try:
        gpus = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            name = nvml.nvmlDeviceGetName(handle)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            if isinstance(name, bytes):
                name = name.decode(errors="replace")
            gpus.append(GpuMemory(index, str(name), int(memory.total), int(memory.free)))
        return gpus
    except Exception:
        return None
    finally:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()


def parse_nvidia_smi(text: str) -> list[GpuMemory]:
    """``nvidia-smi --query-gpu=index,name,memory.total,memory.free --format=csv,noheader,
    nounits`` lines (MiB) as GPUs; a name may itself hold commas, ``[N/A]`` is unknown."""
    gpus = []
    for line in text.splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) < 4 or to_int(parts[0]) is None:
            continue
        total, free = to_int(parts[-2]), to_int(parts[-1])
        gpus.append(
            GpuMemory(
                index=int(parts[0]),
                name=", ".join(parts[1:-2]) or "NVIDIA GPU",
                total_bytes=(total or 0) * MIB,
                free_bytes=None if free is None else free * MIB,
            )
        )
    return gpus


def gpus_from_nvidia_smi() -> list[GpuMemory] | None:
    """GPUs listed by ``nvidia-smi``, or None when it is missing or fails."""
    out = run_command(NVIDIA_SMI_QUERY)
    return None if out is None else parse_nvidia_smi(out)


def gpus_from_proc() -> list[GpuMemory] | None:
    """GPUs the NVIDIA kernel driver lists under /proc (no memory), None without the driver."""
    if not PROC_GPUS.is_dir():
        return None
    gpus = []
    for index, entry in enumerate(sorted(PROC_GPUS.iterdir())):
        info = parse_key_values(read_text(entry / "information") or "")
        gpus.append(GpuMemory(index, info.get("Model", "NVIDIA GPU")))
    return gpus


def gpus_from_libcuda() -> list[GpuMemory] | None:
    """GPUs the CUDA driver library reports (total memory only), or None without it."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return None
    gpus = []
    for index in range(count.value):
        device = ctypes.c_int(0)
        name = ctypes.create_string_buffer(256)
        memory = ctypes.c_size_t(0)
        if cuda.cuDeviceGet(ctypes.byref(device), index) != 0:
            continue
        cuda.cuDeviceGetName(name, len(name), device)
        cuda.cuDeviceTotalMem_v2(ctypes.byref(memory), device)
        label = name.value.decode(errors="replace") or "NVIDIA GPU"
        gpus.append(GpuMemory(index, label, memory.value))
    return gpus


class CudaContext(DeviceContext):
    """NVIDIA CUDA GPUs; the preferred device when present."""

    kind = "cuda"
    priority = 100

    def detect(self) -> DeviceInfo:
        """Try NVML, nvidia-smi, /proc/driver/nvidia, then libcuda; report what was found."""
        for source, probe in (
            ("nvml", gpus_from_nvml),
            ("nvidia-smi", gpus_from_nvidia_smi),
            ("/proc/driver/nvidia", gpus_from_proc),
            ("libcuda", gpus_from_libcuda),
        ):
            found = probe()
            if found:
                return visible_device(self.kind, found, source, "CUDA_VISIBLE_DEVICES", "NVIDIA")
        return DeviceInfo(
            kind=self.kind,
            present=False,
            reason="no NVIDIA GPU found (no NVML driver library, nvidia-smi, "
            "/proc/driver/nvidia or libcuda.so.1)",
        )
