"""Work handed to a model's step thread, run between two steps.

A step-level backend is only ever called from its step thread (see
:class:`~inferflux_core.contracts.StepBackend`); work that must touch it at runtime, such as
loading a LoRA adapter, is queued here and run by the step loop's housekeeping.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any


class StepTasks:
    """A queue of calls for the step thread; ``wake`` rouses an idle loop."""

    def __init__(self, wake: threading.Event) -> None:
        self._wake = wake
        self._lock = threading.Lock()
        self._pending: collections.deque[tuple[Callable[[], Any], Future[Any]]] = (
            collections.deque()
        )

    @property
    def pending(self) -> bool:
        """True while calls wait to run."""
        return bool(self._pending)

    def submit(self, call: Callable[[], Any]) -> Future[Any]:
        """Queue ``call``; the future holds its result or exception once the thread ran it."""
        future: Future[Any] = Future()
        with self._lock:
            self._pending.append((call, future))
        self._wake.set()
        return future

    def run_pending(self) -> None:
        """Run every queued call (on the step thread), each reporting to its own future."""
        while True:
            with self._lock:
                if not self._pending:
                    return
                call, future = self._pending.popleft()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(call())
            except BaseException as exc:  # the caller gets it; the loop goes on
                future.set_exception(exc)

    def fail_all(self, error: Exception) -> None:
        """Fail every queued call with ``error`` (the model stops)."""
        with self._lock:
            pending, self._pending = self._pending, collections.deque()
        for _call, future in pending:
            if future.set_running_or_notify_cancel():
                future.set_exception(error)
