"""The bundled device contexts: cpu, cuda, rocm and metal."""

from __future__ import annotations

from inferflux_core.contracts import DeviceContext
from inferflux_core.hookspecs import hookimpl
from inferflux_plugins.devices.cpu import CpuContext
from inferflux_plugins.devices.cuda import CudaContext
from inferflux_plugins.devices.metal import MetalContext
from inferflux_plugins.devices.rocm import RocmContext


@hookimpl
def register_device_contexts() -> dict[str, type[DeviceContext]]:
    """Register the four device kinds this distribution knows how to detect."""
    return {
        "cpu": CpuContext,
        "cuda": CudaContext,
        "rocm": RocmContext,
        "metal": MetalContext,
    }
