"""The bundled device contexts: cpu, cuda, rocm and metal."""

from __future__ import annotations

from inferflux_core.contracts import DeviceContext
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
    """Every device context detects without raising, and the CPU is present."""
    problems = []
    for kind, context in register_device_contexts().items():
        try:
            info = context().detect()
        except Exception as exc:
            problems.append(f"detecting {kind} raised {type(exc).__name__}: {exc}")
            continue
        if kind == "cpu" and not info.present:
            problems.append(f"the CPU was not detected: {info.reason or 'no reason given'}")
    return problems
