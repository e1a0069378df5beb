"""Small, failure-proof probes the device contexts share: read a file, run a tool."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

#: Seconds a probing command may take before it counts as "not there".
COMMAND_TIMEOUT = 3.0


@dataclass(frozen=True, slots=True)
class Gpu:
    """One GPU as a probe saw it."""

    name: str
    memory_bytes: int = 0


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


def parse_key_values(text: str, separator: str = ":") -> dict[str, str]:
    """``key<sep> value`` lines as a dict (first occurrence wins)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, found, value = line.partition(separator)
        if found:
            values.setdefault(key.strip(), value.strip())
    return values
