"""AMD GPUs through ROCm with their total and free memory, never through torch: ``amdsmi``
(AMD's SMI library binding) if it imports, else ``rocm-smi --json``, else the kfd driver's
topology (total memory only)."""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import Any

from inferflux_core.contracts import DeviceContext, DeviceInfo, GpuMemory
from inferflux_plugins.devices._probe import (
    import_optional,
    parse_key_values,
    read_text,
    run_command,
    to_int,
    visible_device,
)

KFD = Path("/dev/kfd")
TOPOLOGY = Path("/sys/class/kfd/kfd/topology/nodes")
ROCM_SMI_QUERY = ["rocm-smi", "--showmeminfo", "vram", "--showproductname", "--json"]
#: rocm-smi's product-name keys, newest spelling first.
NAME_KEYS = ("Card Series", "Card series", "Card Model", "Card model", "Device Name")


def gpus_from_amdsmi() -> list[GpuMemory] | None:
    """GPUs ``amdsmi`` reports, or None when it is missing or its library fails."""
    smi = import_optional("amdsmi")
    if smi is None:
        return None
    try:
        smi.amdsmi_init()
    except Exception:
        return None
    try:
        vram = smi.AmdSmiMemoryType.VRAM
        gpus = []
        for index, handle in enumerate(smi.amdsmi_get_processor_handles()):
            total = int(smi.amdsmi_get_gpu_memory_total(handle, vram))
            used = int(smi.amdsmi_get_gpu_memory_usage(handle, vram))
            asic: Any = smi.amdsmi_get_gpu_asic_info(handle)
            market_name = asic.get("market_name") if isinstance(asic, dict) else None
            name = str(market_name or "AMD GPU")
            gpus.append(GpuMemory(index, name, total, max(total - used, 0)))
        return gpus
    except Exception:
        return None
    finally:
        with contextlib.suppress(Exception):
            smi.amdsmi_shut_down()


def parse_rocm_smi_json(text: str) -> list[GpuMemory]:
    """``rocm-smi --showmeminfo vram --showproductname --json`` as GPUs, in card order
    (``{"card0": {"VRAM Total Memory (B)": "...", "VRAM Total Used Memory (B)": "...",
    "Card Series": "..."}, ...}``; bytes as strings). Unparseable output is no GPU."""
    try:
        data = json.loads(text)
    except ValueError:
        return []
    if not isinstance(data, dict):
        return []
    cards = []
    for key, entry in data.items():
        match = re.fullmatch(r"card(\d+)", str(key))
        if match and isinstance(entry, dict):
            cards.append((int(match.group(1)), entry))
    gpus = []
    for index, entry in sorted(cards, key=lambda card: card[0]):
        total = to_int(entry.get("VRAM Total Memory (B)", ""))
        used = to_int(entry.get("VRAM Total Used Memory (B)", ""))
        name = next((str(entry[k]) for k in NAME_KEYS if entry.get(k)), "AMD GPU")
        free = None if total is None or used is None else max(total - used, 0)
        gpus.append(GpuMemory(index, name, total or 0, free))
    return gpus


def gpus_from_rocm_smi() -> list[GpuMemory] | None:
    """GPUs ``rocm-smi`` lists, or None when it is missing or fails."""
    out = run_command(ROCM_SMI_QUERY)
    return None if out is None else parse_rocm_smi_json(out)


def gpus_from_topology() -> list[GpuMemory] | None:
    """GPU nodes of the kfd topology (nodes with SIMD units; CPU nodes have none)."""
    if not TOPOLOGY.is_dir():
        return None
    gpus = []
    nodes = sorted(TOPOLOGY.iterdir(), key=lambda node: (len(node.name), node.name))
    for node in nodes:
        properties = parse_key_values(read_text(node / "properties") or "", separator=" ")
        if properties.get("simd_count", "0") in ("", "0"):
            continue
        name = (read_text(node / "name") or "").strip() or "AMD GPU"
        gpus.append(GpuMemory(len(gpus), name, _node_memory(node)))
    return gpus


def _node_memory(node: Path) -> int:
    total = 0
    banks = node / "mem_banks"
    if banks.is_dir():
        for bank in banks.iterdir():
            size = parse_key_values(read_text(bank / "properties") or "", separator=" ")
            total += to_int(size.get("size_in_bytes", "0")) or 0
    return total


class RocmContext(DeviceContext):
    """AMD GPUs with the ROCm stack."""

    kind = "rocm"
    priority = 90

    def detect(self) -> DeviceInfo:
        """Without /dev/kfd there is no ROCm GPU; else ask amdsmi, rocm-smi, the topology."""
        if not KFD.exists():
            return DeviceInfo(kind=self.kind, present=False, reason="no /dev/kfd (no ROCm driver)")
        for source, probe in (
            ("amdsmi", gpus_from_amdsmi),
            ("rocm-smi", gpus_from_rocm_smi),
            ("kfd topology", gpus_from_topology),
        ):
            found = probe()
            if found:
                return visible_device(self.kind, found, source, "HIP_VISIBLE_DEVICES", "AMD")
        return DeviceInfo(kind=self.kind, present=False, reason="/dev/kfd exists but lists no GPU")
