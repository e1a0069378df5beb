"""The worker pool that keeps CPU-heavy request preparation off the event loop.

Tokenizing, chat template rendering, JSON Schema checks, grammar building and parsing a large
body all run here, never in an async handler: while one request is being prepared the event
loop keeps answering every other client (``/healthz`` among them). The pool is small
(:data:`MAX_WORKERS` threads: pure-Python work holds the GIL, so more threads would not add
speed, while llama.cpp calls release it) and bounded: at most :data:`MAX_PENDING` jobs run or
wait, and one more is refused at once with a 503 ``server_busy`` and ``Retry-After``.
Submitting to the engine stays on the event loop, after the job is done.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from inferflux_core.errors import ServerBusyError

#: Threads preparing requests.
MAX_WORKERS = 2
#: Jobs running or waiting, at most; one more is a 503.
MAX_PENDING = 32
RETRY_AFTER_SECONDS = 1

P = ParamSpec("P")
T = TypeVar("T")


class WorkerPool:
    """A bounded thread pool whose jobs are awaited from the event loop."""

    def __init__(self, max_workers: int = MAX_WORKERS, max_pending: int = MAX_PENDING) -> None:
        self._executor = ThreadPoolExecutor(max_workers, thread_name_prefix="inferflux-prepare")
        self.max_pending = max_pending
        self._pending = 0
        self._lock = threading.Lock()

    @property
    def pending(self) -> int:
        """Jobs running or waiting now."""
        return self._pending

    async def run(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``function(*args, **kwargs)`` in a worker; its exception is raised here.

        503 ``server_busy`` if :attr:`max_pending` jobs are already running or waiting. A
        caller that is cancelled stops waiting; a job already running finishes on its own.
        """
        with self._lock:
            if self._pending >= self.max_pending:
                raise ServerBusyError(
                    "the server is busy preparing other requests; retry shortly",
                    headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
                )
            self._pending += 1
        try:
            future = self._executor.submit(function, *args, **kwargs)
        except BaseException:
            self._release(None)
            raise
        future.add_done_callback(self._release)
        return await asyncio.wrap_future(future)

    def _release(self, _future: Future[T] | None) -> None:
        with self._lock:
            self._pending -= 1


_default: WorkerPool | None = None
_default_lock = threading.Lock()


def default_pool() -> WorkerPool:
    """The process's pool, made on first use; shared by every engine (it holds no state of
    theirs, only threads)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = WorkerPool()
        return _default
