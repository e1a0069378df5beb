"""Free memory per device: this machine's, cgroup v1 and v2 limits (on cgroup trees written
here), and what GPU devices report."""

from __future__ import annotations

from pathlib import Path

from inferflux_core.contracts import DeviceInfo, GpuMemory
from inferflux_core.engine.device_memory import (
    cgroup_headroom,
    format_bytes,
    free_memory,
    host_free_memory,
)

GIB = 1 << 30


def mem_total() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no MemTotal")


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cpu_free_memory_here_is_positive_and_at_most_the_total() -> None:
    free = free_memory(DeviceInfo(kind="cpu", present=True))
    assert free is not None
    assert 0 < free <= mem_total()


def test_cgroup_v2_limit_bounds_mem_available(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    write(meminfo, "MemTotal: 16777216 kB\nMemAvailable: 8388608 kB\n")  # 8 GiB available
    proc = tmp_path / "cgroup"
    write(proc, "0::/app/worker\n")
    root = tmp_path / "fs"
    write(root / "cgroup.controllers", "cpu memory pids\n")
    write(root / "app" / "memory.max", f"{4 * GIB}\n")
    write(root / "app" / "memory.current", f"{3 * GIB}\n")
    write(root / "app" / "memory.stat", f"anon 1\ninactive_file {GIB // 2}\n")
    write(root / "app" / "worker" / "memory.max", "max\n")
    write(root / "app" / "worker" / "memory.current", f"{GIB}\n")
    # the parent's limit binds: 4 GiB - (3 GiB used - 0.5 GiB reclaimable)
    assert cgroup_headroom(proc, root) == 4 * GIB - (3 * GIB - GIB // 2)
    assert host_free_memory(meminfo, proc, root) == 4 * GIB - (3 * GIB - GIB // 2)


def test_cgroup_v1_limit_and_unlimited(tmp_path: Path) -> None:
    proc = tmp_path / "cgroup"
    write(proc, "12:pids:/\n4:memory:/docker/abc\n1:name=systemd:/\n0::/\n")
    group = tmp_path / "fs" / "memory" / "docker" / "abc"
    write(group / "memory.limit_in_bytes", f"{2 * GIB}\n")
    write(group / "memory.usage_in_bytes", f"{GIB}\n")
    write(group / "memory.stat", "cache 5\ntotal_inactive_file 1024\n")
    assert cgroup_headroom(proc, tmp_path / "fs") == 2 * GIB - (GIB - 1024)
    write(group / "memory.limit_in_bytes", "9223372036854771712\n")
    assert cgroup_headroom(proc, tmp_path / "fs") is None


def test_namespaced_cgroup_reads_the_mount_itself(tmp_path: Path) -> None:
    proc = tmp_path / "cgroup"
    write(proc, "0::/not/mounted/here\n")
    root = tmp_path / "fs"
    write(root / "cgroup.controllers", "memory\n")
    write(root / "memory.max", f"{GIB}\n")
    write(root / "memory.current", f"{GIB // 4}\n")
    assert cgroup_headroom(proc, root) == GIB - GIB // 4


def test_unreadable_or_garbled_files_mean_no_limit(tmp_path: Path) -> None:
    assert cgroup_headroom(tmp_path / "missing", tmp_path) is None
    proc = tmp_path / "cgroup"
    write(proc, "0::/\n")
    write(tmp_path / "cgroup.controllers", "memory\n")
    write(tmp_path / "memory.max", "lots\n")
    write(tmp_path / "memory.current", "-5\n")
    assert cgroup_headroom(proc, tmp_path) is None
    meminfo = tmp_path / "meminfo"
    write(meminfo, "MemAvailable: many kB\n")
    assert host_free_memory(meminfo, proc, tmp_path) is None


def test_gpu_free_memory_sums_the_gpus_and_is_unknown_when_one_is() -> None:
    gpus = (GpuMemory(0, "A", 80 * GIB, 70 * GIB), GpuMemory(1, "B", 80 * GIB, 10 * GIB))
    assert free_memory(DeviceInfo(kind="cuda", present=True, gpus=gpus)) == 80 * GIB
    unknown = (GpuMemory(0, "A", 80 * GIB, None),)
    assert free_memory(DeviceInfo(kind="cuda", present=True, gpus=unknown)) is None
    assert free_memory(DeviceInfo(kind="metal", present=True)) is None


def test_format_bytes_uses_human_units() -> None:
    assert format_bytes(3 * GIB // 2) == "1.50 GiB"
    assert format_bytes(96576768) == "92.10 MiB"
    assert format_bytes(23040) == "22.50 KiB"
    assert format_bytes(12) == "12 B"
