"""Load-time llama.cpp compute leaves no OpenMP thread team behind (see passing_thread.py).

A thread that runs an OpenMP region keeps a team of worker threads for as long as it lives;
a second team next to the step thread's makes libgomp throttle its barriers, which halved
decode speed on 2 cores. The checks run in a fresh interpreter, where no other test's threads
come and go, and count the process's OS threads.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest

from inferflux_core.sources import find_default_model_path
from inferflux_plugins.backends.llama_cpp.passing_thread import run_on_passing_thread

CHILD = r"""
import json, os, sys, threading, time
import llama_cpp, numpy  # their own threads (OpenBLAS) start here, before counting
from inferflux_core.contracts import BackendSpec, SamplingParams, SequenceChunk
from inferflux_plugins.backends.llama_cpp import LlamaCppBackend
from inferflux_plugins.devices.cpu import CpuContext

def os_threads():
    return len(os.listdir("/proc/self/task"))

before = os_threads()
backend = LlamaCppBackend(BackendSpec(
    model_name="t", model_path=sys.argv[1], device=CpuContext().detect(),
    context_length=256, max_sequences=1, options={"threads": 2},
))
# the probe's thread and its team's worker end just after the load returns: let them go
deadline = time.monotonic() + 5
while os_threads() > before and time.monotonic() < deadline:
    time.sleep(0.01)
after_load = os_threads()
backend.open_sequence(0, SamplingParams(temperature=0.0))
backend.decode([SequenceChunk(0, tuple(backend.tokenize("Hello there")))])
after_decode = os_threads()
print(json.dumps({
    "probed": backend.kv_rows_by_chunk_class is not None,
    "openmp": "OPENMP = 1" in llama_cpp.llama_print_system_info().decode(),
    "before": before, "after_load": after_load, "after_decode": after_decode,
}))
backend.close()
"""


def test_the_result_and_the_thread_of_a_passing_thread_call() -> None:
    seen: list[threading.Thread] = []

    def work() -> int:
        seen.append(threading.current_thread())
        return 42

    assert run_on_passing_thread(work) == 42
    assert seen[0] is not threading.current_thread()
    assert not seen[0].is_alive()


def test_a_passing_thread_call_raises_its_exception_here() -> None:
    def fail() -> None:
        raise ValueError("probe failed")

    with pytest.raises(ValueError, match="probe failed"):
        run_on_passing_thread(fail)


def test_loading_the_backend_leaves_no_thread_team_behind() -> None:
    """Loading (whose row probe decodes) adds no lasting thread (those it started end within
    seconds); a decode on the loading thread does add its team's worker, so the count does see
    a team when there is one."""
    completed = subprocess.run(
        [sys.executable, "-c", CHILD, str(find_default_model_path())],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    counts = json.loads(completed.stdout.strip().splitlines()[-1])
    assert counts["after_load"] == counts["before"], counts
    if counts["openmp"]:
        assert counts["after_decode"] > counts["after_load"], counts
