"""Free memory on a device: the host's (bounded by this process's cgroup) or its GPUs'.

The CPU figure is ``MemAvailable`` from ``/proc/meminfo`` (free memory plus the page cache
and other memory the kernel can reclaim), lowered to what this process's memory cgroup
still allows when it has a limit: ``memory.max`` minus the working set (``memory.current``
less ``inactive_file``, as the kubelet counts it) for cgroup v2, ``memory.limit_in_bytes``
minus ``memory.usage_in_bytes`` (less ``total_inactive_file``) for v1, the tightest over the
cgroup and its ancestors. GPU figures are what the device context reported per GPU
(:attr:`~inferflux_core.contracts.DeviceInfo.gpus`), summed: the ``llama_cpp`` backend
spreads a model over every GPU of its device by default.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from inferflux_core.contracts import DeviceInfo

PROC_MEMINFO = Path("/proc/meminfo")
PROC_CGROUP = Path("/proc/self/cgroup")
CGROUP_ROOT = Path("/sys/fs/cgroup")
#: A cgroup v1 limit at or above this is the kernel's "no limit" (page-rounded 2**63 - 1).
V1_UNLIMITED = 1 << 62
#: Most bytes read of one /proc or /sys file (they are a few KiB).
MAX_FILE_BYTES = 1 << 20
_UNITS = (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10))


def free_memory(device: DeviceInfo) -> int | None:
    """Bytes free for a new model on ``device``; None when that cannot be known (a GPU whose
    driver tool did not report free memory)."""
    if device.kind == "cpu":
        return host_free_memory()
    if not device.gpus or any(gpu.free_bytes is None for gpu in device.gpus):
        return None
    return sum(gpu.free_bytes or 0 for gpu in device.gpus)


def host_free_memory(
    meminfo: Path = PROC_MEMINFO,
    proc_cgroup: Path = PROC_CGROUP,
    cgroup_root: Path = CGROUP_ROOT,
) -> int | None:
    """``MemAvailable`` bounded by the cgroup's headroom; None where neither is readable."""
    available = _meminfo_bytes(meminfo, "MemAvailable")
    headroom = cgroup_headroom(proc_cgroup, cgroup_root)
    figures = [figure for figure in (available, headroom) if figure is not None]
    return max(0, min(figures)) if figures else None


def cgroup_headroom(proc_cgroup: Path = PROC_CGROUP, root: Path = CGROUP_ROOT) -> int | None:
    """What this process's memory cgroup (and its ancestors) still allow; None: no limit."""
    text = _read(proc_cgroup)
    if text is None:
        return None
    v2_path, v1_path = None, None
    for line in text.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            v2_path = path
        elif "memory" in controllers.split(","):
            v1_path = path
    if v1_path is not None:
        return _tightest(_cgroup_dirs(root / "memory", v1_path), _v1_headroom)
    if v2_path is not None and (root / "cgroup.controllers").is_file():
        return _tightest(_cgroup_dirs(root, v2_path), _v2_headroom)
    return None


def format_bytes(count: int) -> str:
    """``count`` bytes in GiB, MiB or KiB with two significant decimals (``1.25 GiB``)."""
    for unit, size in _UNITS:
        if abs(count) >= size:
            return f"{count / size:.2f} {unit}"
    return f"{count} B"


def _cgroup_dirs(mount: Path, path: str) -> list[Path]:
    """The cgroup's directory under ``mount`` and each ancestor's up to the mount.

    Inside a container with its own cgroup namespace the path is ``/`` and the mount is the
    container's cgroup; without one the path may name a directory not mounted here: then the
    mount's own files are all there is.
    """
    parts = [part for part in path.split("/") if part and part not in (".", "..")]
    dirs = [mount.joinpath(*parts[:depth]) for depth in range(len(parts), -1, -1)]
    return [directory for directory in dirs if directory.is_dir()] or [mount]


def _tightest(dirs: list[Path], headroom_of: Callable[[Path], int | None]) -> int | None:
    figures = [figure for d in dirs if (figure := headroom_of(d)) is not None]
    return min(figures) if figures else None


def _v2_headroom(directory: Path) -> int | None:
    limit = _read(directory / "memory.max")
    if limit is None or limit.strip() == "max":
        return None
    current = _int(_read(directory / "memory.current"))
    maximum = _int(limit)
    if maximum is None or current is None:
        return None
    inactive = _stat(directory / "memory.stat", "inactive_file") or 0
    return maximum - max(0, current - inactive)


def _v1_headroom(directory: Path) -> int | None:
    limit = _int(_read(directory / "memory.limit_in_bytes"))
    usage = _int(_read(directory / "memory.usage_in_bytes"))
    if limit is None or usage is None or limit >= V1_UNLIMITED:
        return None
    inactive = _stat(directory / "memory.stat", "total_inactive_file") or 0
    return limit - max(0, usage - inactive)


def _meminfo_bytes(path: Path, key: str) -> int | None:
    text = _read(path)
    for line in (text or "").splitlines():
        name, _, value = line.partition(":")
        if name.strip() == key:
            number, _, unit = value.strip().partition(" ")
            count = _int(number)
            if count is None:
                return None
            return count * 1024 if unit.strip() == "kB" else count
    return None


def _stat(path: Path, key: str) -> int | None:
    for line in (_read(path) or "").splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return _int(value)
    return None


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.strip()
    return int(text) if text.isdigit() and len(text) <= 20 else None


def _read(path: Path) -> str | None:
    try:
        with path.open("rb") as handle:
            return handle.read(MAX_FILE_BYTES).decode("ascii", errors="replace")
    except OSError:
        return None
