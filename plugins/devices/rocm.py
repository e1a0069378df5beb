"""AMD GPUs through ROCm, found via the kfd driver's topology or rocm-smi."""

from __future__ import annotations

from pathlib import Path

from inferflux_core.contracts import DeviceContext, DeviceInfo
from inferflux_plugins.devices._probe import Gpu, parse_key_values, read_text, run_command

KFD = Path("/dev/kfd")
TOPOLOGY = Path("/sys/class/kfd/kfd/topology/nodes")


def gpus_from_topology() -> list[Gpu]:
    """GPU nodes of the kfd topology (nodes with SIMD units; CPU nodes have none)."""
    if not TOPOLOGY.is_dir():
        return []
    gpus = []
    for node in sorted(TOPOLOGY.iterdir()):
        properties = parse_key_values(read_text(node / "properties") or "", separator=" ")
        if properties.get("simd_count", "0") in ("", "0"):
            continue
        name = (read_text(node / "name") or "").strip() or "AMD GPU"
        gpus.append(Gpu(name, _node_memory(node)))
    return gpus


def _node_memory(node: Path) -> int:
    total = 0
    banks = node / "mem_banks"
    if banks.is_dir():
        for bank in banks.iterdir():
            size = parse_key_values(read_text(bank / "properties") or "", separator=" ")
            value = size.get("size_in_bytes", "0")
            total += int(value) if value.isdigit() else 0
    return total


def gpus_from_rocm_smi() -> list[Gpu]:
    """GPUs ``rocm-smi --showproductname`` lists, one per ``GPU[n]``."""
    out = run_command(["rocm-smi", "--showproductname"]) or ""
    names: dict[str, str] = {}
    for line in out.splitlines():
        if line.startswith("GPU[") and "Card series" in line:
            names.setdefault(line.split("]")[0], line.rpartition(":")[2].strip())
    return [Gpu(name or "AMD GPU") for name in names.values()]


class RocmContext(DeviceContext):
    """AMD GPUs with the ROCm stack."""

    kind = "rocm"
    priority = 90

    def detect(self) -> DeviceInfo:
        """Look for /dev/kfd and GPU nodes in its topology, or ask rocm-smi."""
        if not KFD.exists():
            return DeviceInfo(kind=self.kind, present=False, reason="no /dev/kfd (no ROCm driver)")
        gpus = gpus_from_topology() or gpus_from_rocm_smi()
        if not gpus:
            return DeviceInfo(
                kind=self.kind, present=False, reason="/dev/kfd exists but lists no GPU"
            )
        return DeviceInfo(
            kind=self.kind,
            present=True,
            name=gpus[0].name,
            count=len(gpus),
            memory_bytes=gpus[0].memory_bytes,
            details={"gpus": [gpu.name for gpu in gpus]},
        )
