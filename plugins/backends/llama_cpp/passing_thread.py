"""Load-time llama.cpp compute on a thread that ends with it, so only the step thread keeps an
OpenMP thread team.

llama.cpp's CPU backend, built with OpenMP (llama-cpp-python's default), runs each graph in an
``omp parallel`` region and syncs its threads with ``omp barrier``. libgomp gives every thread
that starts a parallel region a team of worker threads that lives as long as that thread, and
once the process holds more of its threads than there are CPUs it throttles every barrier's
spin-wait from about 300,000 spins to 100, so threads sleep and wake at each of the hundreds of
barriers of a decode step. On 2 cores, one extra team (a probe decode run at load on the main
thread, say) halved the step thread's decode speed: 55 against 125 tok/s for one sequence of
SmolLM2-135M (measured, AMD EPYC, 2 threads). Compute done at load therefore runs here, on a
thread that exits, and takes its team with it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def run_on_passing_thread(function: Callable[[], T], name: str = "llama-cpp-load") -> T:
    """``function()`` run on a new thread that ends when it returns; its result, or its
    exception raised here."""
    outcome: list[T] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            outcome.append(function())
        except BaseException as exc:  # re-raised on the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]
