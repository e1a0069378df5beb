"""NVIDIA GPUs, found through nvidia-smi, the driver's /proc entries, or libcuda (never torch)."""

from __future__ import annotations

import ctypes
from pathlib import Path

from inferflux_core.contracts import DeviceContext, DeviceInfo
from inferflux_plugins.devices._probe import Gpu, parse_key_values, read_text, run_command

PROC_GPUS = Path("/proc/driver/nvidia/gpus")
MIB = 1024 * 1024


def gpus_from_nvidia_smi() -> list[Gpu] | None:
    """GPUs listed by ``nvidia-smi``, or None when it is missing or fails."""
    out = run_command(
        ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"]
    )
    if out is None:
        return None
    gpus = []
    for line in out.splitlines():
        name, _, memory = line.rpartition(",")
        if name.strip():
            mib = memory.strip()
            gpus.append(Gpu(name.strip(), int(mib) * MIB if mib.isdigit() else 0))
    return gpus


def gpus_from_proc() -> list[Gpu] | None:
    """GPUs the NVIDIA kernel driver lists under /proc, or None without the driver."""
    if not PROC_GPUS.is_dir():
        return None
    gpus = []
    for entry in sorted(PROC_GPUS.iterdir()):
        info = parse_key_values(read_text(entry / "information") or "")
        gpus.append(Gpu(info.get("Model", "NVIDIA GPU")))
    return gpus


def gpus_from_libcuda() -> list[Gpu] | None:
    """GPUs the CUDA driver library reports, or None when it is missing or fails."""
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
        gpus.append(Gpu(name.value.decode(errors="replace") or "NVIDIA GPU", memory.value))
    return gpus


class CudaContext(DeviceContext):
    """NVIDIA CUDA GPUs; the preferred device when present."""

    kind = "cuda"
    priority = 100

    def detect(self) -> DeviceInfo:
        """Try nvidia-smi, then /proc/driver/nvidia, then libcuda; report what was found."""
        for source, probe in (
            ("nvidia-smi", gpus_from_nvidia_smi),
            ("/proc/driver/nvidia", gpus_from_proc),
            ("libcuda", gpus_from_libcuda),
        ):
            gpus = probe()
            if gpus:
                return DeviceInfo(
                    kind=self.kind,
                    present=True,
                    name=gpus[0].name,
                    count=len(gpus),
                    memory_bytes=gpus[0].memory_bytes,
                    details={"source": source, "gpus": [gpu.name for gpu in gpus]},
                )
        return DeviceInfo(
            kind=self.kind,
            present=False,
            reason="no NVIDIA GPU found (no nvidia-smi, /proc/driver/nvidia or libcuda.so.1)",
        )
