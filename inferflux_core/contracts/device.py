"""The contract a device-context plugin implements."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True)
class GpuMemory:
    """One GPU of a device as its driver tool reports it: index, name and memory in bytes.

    ``index`` is the driver's (NVML's, amdsmi's) order, which is what llama.cpp's
    ``main_gpu`` and ``tensor_split`` refer to when no ``CUDA_VISIBLE_DEVICES`` /
    ``HIP_VISIBLE_DEVICES`` reorders them. ``free_bytes`` is None where the source cannot say.
    """

    index: int
    name: str
    total_bytes: int = 0
    free_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What a device context found on this machine.

    A backend asks the device it was given (``BackendSpec.device``) about the hardware,
    through ``features``, instead of probing it itself or importing a device plugin.
    """

    kind: str
    present: bool
    name: str = ""
    count: int = 0
    memory_bytes: int = 0
    cores: int = 0
    reason: str = ""
    #: Free-form facts, for people reading them rather than for decisions.
    details: Mapping[str, Any] = field(default_factory=dict)
    #: Capabilities a backend may act on, as lower-case names; one a device does not report is
    #: one it does not promise. The cpu device reports the ISA extensions it found among
    #: ``avx2``, ``avx512f`` and ``amx`` (Intel AMX: any of its tile, int8 or bf16 units).
    features: frozenset[str] = frozenset()
    #: Each GPU of a GPU device, with its total and free memory (empty for the cpu device and
    #: where detection found the GPUs without their memory). ``count`` is ``len(gpus)`` when
    #: set, and ``memory_bytes`` the first GPU's total.
    gpus: tuple[GpuMemory, ...] = ()


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity mask), at least 1.

    What the cpu device reports as ``cores``, and what a backend that runs threads on the host
    falls back to on a device that reports no cores.
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class DeviceContext(ABC):
    """Detects one kind of device (cpu, cuda, rocm, metal) without importing heavy frameworks.

    ``priority`` orders devices for ``device: auto``: the present device with the highest
    priority wins.
    """

    #: The device kind this context detects: ``cpu``, ``cuda``, ``rocm``, ``metal``, ...
    kind: ClassVar[str]
    #: Preference for ``device: auto``: the present device with the highest priority wins.
    priority: ClassVar[int] = 0

    @abstractmethod
    def detect(self) -> DeviceInfo:
        """Look for the device; return ``present=False`` with a ``reason`` when absent.

        Must not raise for a missing device and must not import torch.
        """
