"""The CPU device: always present; reports cores, memory and the ISA extensions that matter."""

from __future__ import annotations

import functools
import os
import platform

from inferflux_core.contracts import DeviceContext, DeviceInfo, usable_cores
from inferflux_plugins.devices._probe import parse_key_values, read_text

AMX_FLAGS = frozenset({"amx_tile", "amx_int8", "amx_bf16"})
ISA_FLAGS = ("avx2", "avx512f")
#: The ``DeviceInfo.features`` name for Intel AMX (any of :data:`AMX_FLAGS`).
AMX = "amx"


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The feature flags of the first CPU in ``/proc/cpuinfo`` (empty where there is none)."""
    text = read_text("/proc/cpuinfo") or ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_has_amx(flags: frozenset[str] | None = None) -> bool:
    """True when the CPU has Intel AMX (any of ``amx_tile``, ``amx_int8``, ``amx_bf16``)."""
    return bool((cpu_flags() if flags is None else flags) & AMX_FLAGS)


def cpu_features(flags: frozenset[str]) -> frozenset[str]:
    """The ``DeviceInfo.features`` these CPU flags give: ``amx``, ``avx2``, ``avx512f``."""
    found = {flag for flag in ISA_FLAGS if flag in flags}
    if cpu_has_amx(flags):
        found.add(AMX)
    return frozenset(found)


def total_memory_bytes() -> int:
    """Physical memory in bytes, 0 when unknown."""
    meminfo = parse_key_values(read_text("/proc/meminfo") or "")
    total = meminfo.get("MemTotal", "")
    if total.endswith("kB") and total[:-2].strip().isdigit():
        return int(total[:-2]) * 1024
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return 0


def cpu_name() -> str:
    """The CPU's model name."""
    cpuinfo = parse_key_values(read_text("/proc/cpuinfo") or "")
    return cpuinfo.get("model name") or platform.processor() or platform.machine() or "cpu"


class CpuContext(DeviceContext):
    """The host CPU; the fallback every machine has."""

    kind = "cpu"
    priority = 0

    def detect(self) -> DeviceInfo:
        """Describe the CPU: name, usable cores, memory, and its ISA extensions as features."""
        features = cpu_features(cpu_flags())
        details: dict[str, object] = {"logical_cpus": os.cpu_count()}
        details.update({name: name in features for name in (AMX, *ISA_FLAGS)})
        return DeviceInfo(
            kind=self.kind,
            present=True,
            name=cpu_name(),
            count=1,
            memory_bytes=total_memory_bytes(),
            cores=usable_cores(),
            details=details,
            features=features,
        )
