"""Small, failure-proof probes the device contexts share: read a file, run a tool, import a
driver binding."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from inferflux_core.contracts import DeviceInfo, GpuMemory

#: Seconds a probing command may take before it counts as "not there".
COMMAND_TIMEOUT = 3.0
MIB = 1024 * 1024


def read_text(path: str | Path) -> str | None:
    """The text of ``path``, or None when it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def run_command(args: list[str], timeout: float = COMMAND_TIMEOUT) -> str | None:
    """The stdout of ``args`` when the tool is on PATH and exits 0 in time, else None."""
    if shutil.which(args[0]) is None:
        return None
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def import_optional(name: str) -> ModuleType | None:
    """The module ``name`` if it imports (a driver binding may fail to find its library)."""
    try:
        return importlib.import_module(name)
    except Exception:
        return None


def parse_key_values(text: str, separator: str = ":") -> dict[str, str]:
    """``key<sep> value`` lines as a dict (first occurrence wins)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, found, value = line.partition(separator)
        if found:
            values.setdefault(key.strip(), value.strip())
    return values


def to_int(text: object) -> int | None:
    """``text`` as a non-negative int (``"81559"``, ``81559``), None for ``[N/A]`` and the like."""
    value = str(text).strip()
    return int(value) if value.isdigit() else None


def gpu_device(kind: str, gpus: Sequence[GpuMemory], source: str) -> DeviceInfo:
    """A present GPU device of ``kind`` made of ``gpus`` (the first names it)."""
    details: dict[str, object] = {
        "source": source,
        "gpus": [
            {
                "index": gpu.index,
                "name": gpu.name,
                "total_bytes": gpu.total_bytes,
                "free_bytes": gpu.free_bytes,
            }
            for gpu in gpus
        ],
    }
    return DeviceInfo(
        kind=kind,
        present=True,
        name=gpus[0].name,
        count=len(gpus),
        memory_bytes=gpus[0].total_bytes,
        details=details,
        gpus=tuple(gpus),
    )


def visible_gpus(gpus: Sequence[GpuMemory], visible: str | None) -> list[GpuMemory]:
    """``gpus`` as a process sees them under ``CUDA_VISIBLE_DEVICES`` / ``HIP_VISIBLE_DEVICES``
    (``visible``): the listed indices, in that order, renumbered from 0; an empty value hides
    every GPU. A list that is not plain indices (GPU UUIDs) leaves ``gpus`` as they are."""
    if visible is None:
        return list(gpus)
    wanted = [part.strip() for part in visible.split(",") if part.strip()]
    if not wanted:
        return []
    if not all(to_int(part) is not None for part in wanted):
        return list(gpus)
    by_index = {gpu.index: gpu for gpu in gpus}
    shown = [by_index[int(part)] for part in wanted if int(part) in by_index]
    return [GpuMemory(i, g.name, g.total_bytes, g.free_bytes) for i, g in enumerate(shown)]


def visible_device(
    kind: str, found: Sequence[GpuMemory], source: str, variable: str, vendor: str
) -> DeviceInfo:
    """The ``kind`` device made of the ``found`` GPUs this process may use (``variable``, as
    ``CUDA_VISIBLE_DEVICES``, says which); absent, saying so, when it hides them all."""
    gpus = visible_gpus(found, os.environ.get(variable))
    if not gpus:
        return DeviceInfo(
            kind=kind, present=False, reason=f"{variable} hides all {len(found)} {vendor} GPU(s)"
        )
    return gpu_device(kind, gpus, source)
