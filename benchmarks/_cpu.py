"""CPU accounting from ``/proc``: how busy the machine, a process, and everything else were.

llama.cpp on a small CPU collapses when anything else runs beside it, so every measurement in
the benchmark records who used the CPU while it ran. All numbers are in "cores" (1.0 = one core
busy for the whole interval); on a machine without ``/proc`` they are ``None``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

#: Cores used by other processes during a measurement above which it counts as contended.
CONTENTION_CORES = 0.25
#: Seconds to wait before re-running a contended measurement.
RETRY_PAUSE_SECONDS = 10.0

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def system_busy_seconds() -> float | None:
    """CPU seconds all CPUs spent not idle since boot (``/proc/stat``), or None."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    # cpu user nice system idle iowait irq softirq steal guest guest_nice
    values = [int(v) for v in first[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    guest = sum(values[8:10]) if len(values) > 9 else 0  # already counted in user/nice
    return (sum(values) - idle - guest) / _CLOCK_TICKS


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` (all its threads), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    # after the ")" the fields start at "state" (field 3): utime is field 14, stime 15
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


@dataclass(frozen=True, slots=True)
class CpuUsage:
    """CPU used during one interval, in cores (1.0 = one core fully busy)."""

    wall: float
    system: float | None
    watched: float | None
    me: float

    @property
    def other(self) -> float | None:
        """Cores used by processes that are neither watched nor this one: contention."""
        if self.system is None or self.watched is None:
            return None
        return max(0.0, self.system - self.watched - self.me)


class CpuMeter:
    """Measures CPU use of the machine, of ``pids`` and of this process over an interval."""

    def __init__(self, pids: list[int] | None = None) -> None:
        self.pids = list(pids or [])
        self._start: tuple[float, float | None, float | None, float] | None = None

    def _sample(self) -> tuple[float, float | None, float | None, float]:
        watched: float | None = 0.0
        for pid in self.pids:
            seconds = process_cpu_seconds(pid)
            watched = None if seconds is None or watched is None else watched + seconds
        return time.perf_counter(), system_busy_seconds(), watched, time.process_time()

    def start(self) -> None:
        """Begin the interval."""
        self._start = self._sample()

    def stop(self) -> CpuUsage:
        """End the interval and return what was used during it."""
        if self._start is None:
            raise RuntimeError("CpuMeter.stop() before start()")
        wall0, sys0, watched0, me0 = self._start
        wall1, sys1, watched1, me1 = self._sample()
        wall = max(wall1 - wall0, 1e-9)
        system = None if sys0 is None or sys1 is None else (sys1 - sys0) / wall
        watched = None if watched0 is None or watched1 is None else (watched1 - watched0) / wall
        return CpuUsage(wall=wall, system=system, watched=watched, me=(me1 - me0) / wall)


def load_average() -> tuple[float, float, float] | None:
    """The 1, 5 and 15 minute load averages, or None."""
    try:
        return os.getloadavg()
    except OSError:
        return None
