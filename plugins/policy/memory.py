"""An in-memory policy store, for tests and programs that embed the engine."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from inferflux_core.contracts import Policy, PolicyStore
from inferflux_core.hookspecs import hookimpl

#: The version of inferflux's hook contract this plugin was written against.
INFERFLUX_HOOKSPEC_VERSION = 1


class MemoryPolicyStore(PolicyStore):
    """Keeps the policy in this process; nothing survives it."""

    persistent = False

    def __init__(self, **options: Any) -> None:
        if options:
            raise TypeError(f"the memory store takes no options (got {', '.join(options)})")
        super().__init__()
        self._lock = threading.Lock()
        self._policy = Policy()

    def read(self) -> Policy:
        """The current policy."""
        return self._policy

    def update(self, change: Callable[[Policy], Policy]) -> Policy:
        """Apply ``change`` under a lock; the version rises by one."""
        with self._lock:
            changed = change(self._policy)
            self._policy = changed.model_copy(update={"version": self._policy.version + 1})
            return self._policy


@hookimpl
def register_policy_stores() -> dict[str, type[PolicyStore]]:
    """The in-memory store, as ``memory``."""
    return {"memory": MemoryPolicyStore}
