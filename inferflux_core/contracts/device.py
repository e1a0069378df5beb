"""The contract a device-context plugin implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What a device context found on this machine."""

    kind: str
    present: bool
    name: str = ""
    count: int = 0
    memory_bytes: int = 0
    cores: int = 0
    reason: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)


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
