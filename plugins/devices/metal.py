"""Apple-silicon GPUs through Metal (macOS on arm64)."""

from __future__ import annotations

import platform

from inferflux_core.contracts import DeviceContext, DeviceInfo, GpuMemory
from inferflux_plugins.devices._probe import run_command


class MetalContext(DeviceContext):
    """The GPU of an Apple-silicon Mac; it shares the machine's (unified) memory."""

    kind = "metal"
    priority = 80

    def detect(self) -> DeviceInfo:
        """Present on macOS arm64; name and memory from ``sysctl``."""
        system, machine = platform.system(), platform.machine()
        if system != "Darwin" or machine != "arm64":
            return DeviceInfo(
                kind=self.kind,
                present=False,
                reason=f"Metal needs macOS on Apple silicon (this is {system} {machine})",
            )
        name = (run_command(["sysctl", "-n", "machdep.cpu.brand_string"]) or "").strip()
        memory = (run_command(["sysctl", "-n", "hw.memsize"]) or "").strip()
        total = int(memory) if memory.isdigit() else 0
        label = name or "Apple silicon"
        return DeviceInfo(
            kind=self.kind,
            present=True,
            name=label,
            count=1,
            memory_bytes=total,
            details={"unified_memory": True},
            # unified memory: the GPU shares the machine's; how much is free is not reported
            gpus=(GpuMemory(0, label, total, None),),
        )
