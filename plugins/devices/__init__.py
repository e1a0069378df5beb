"""The bundled device contexts: cpu, cuda, rocm and metal."""

from __future__ import annotations

from inferflux_core.contracts import DeviceContext, DeviceInfo
from inferflux_core.extras import unused_gpu_extras
from inferflux_core.hookspecs import hookimpl
from inferflux_plugins.devices.cpu import CpuContext
from inferflux_plugins.devices.cuda import CudaContext
from inferflux_plugins.devices.metal import MetalContext
from inferflux_plugins.devices.rocm import RocmContext

#: The version of inferflux's hook contract this plugin was written against.
INFERFLUX_HOOKSPEC_VERSION = 1


@hookimpl
def register_device_contexts() -> dict[str, type[DeviceContext]]:
    """Register the four device kinds this distribution knows how to detect."""
    return {
        "cpu": CpuContext,
        "cuda": CudaContext,
        "rocm": RocmContext,
        "metal": MetalContext,
    }


@hookimpl
def self_check() -> list[str]:
    """Every device context detects without raising, the CPU is present, and an installed
    GPU extra (``inferflux[cuda]``, ``[rocm]``) has its GPU."""
    problems = []
    found: dict[str, DeviceInfo] = {}
    for kind, context in register_device_contexts().items():
        try:
            info = found[kind] = context().detect()
        except Exception as exc:
            problems.append(f"detecting {kind} raised {type(exc).__name__}: {exc}")
            continue
        if kind == "cpu" and not info.present:
            problems.append(f"the CPU was not detected: {info.reason or 'no reason given'}")
    present = {kind for kind, info in found.items() if info.present}
    for extra in unused_gpu_extras(present):
        reason = found[extra].reason if extra in found else ""
        problems.append(
            f"inferflux[{extra}] is installed but no {extra.upper()} device was found"
            f"{f' ({reason})' if reason else ''}; `device: auto` serves on CPU with llama.cpp"
        )
    return problems
