"""One model of the fleet: its configuration, lifecycle state and use, as the fleet keeps it.

The lifecycle is ``registered`` -> ``loading`` -> ``ready`` | ``failed`` (with the reason)
-> ``unloading`` -> ``registered``; only :class:`~inferflux_core.engine.fleet.Fleet` moves a
model between states, on the server's event loop.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from inferflux_core.config import ModelConfig

if TYPE_CHECKING:
    from inferflux_core.engine.fleet_lease import LeasedEvents
    from inferflux_core.engine.model import LoadedModel
    from inferflux_core.engine.request_model import RequestModel


class ModelState(StrEnum):
    """Where a model is in its lifecycle."""

    REGISTERED = "registered"
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    UNLOADING = "unloading"


@dataclass(eq=False)
class FleetEntry:
    """A registered model: its config, state, the loaded model while ready, and its use."""

    config: ModelConfig
    state: ModelState = ModelState.REGISTERED
    #: Why the last load failed (``failed``), or why the model stopped serving.
    reason: str | None = None
    #: The exception the last load failed with (re-raised by a failed startup).
    error: BaseException | None = None
    model: LoadedModel | RequestModel | None = None
    #: Wall-clock times (``time.time()``) for people; None until they happen.
    loaded_at: float | None = None
    last_used: float | None = None
    #: ``time.monotonic()`` of the last use: the eviction order (least recent first).
    last_used_monotonic: float = field(default_factory=time.monotonic)
    #: The keep_alive now in force, in seconds (None: forever); a request may change it.
    keep_alive: float | None = None
    #: When an idle model will be unloaded (wall clock); None: not scheduled.
    idle_until: float | None = None
    #: Requests holding the model now (their event streams, to cancel after a grace period).
    leases: set[LeasedEvents] = field(default_factory=set)
    #: The load or unload running now (two never run at once for one model).
    transition: asyncio.Task[None] | None = None
    #: The keep_alive timer of an idle model.
    timer: asyncio.TimerHandle | None = None
    #: Set while no request holds the model (an unload waits on it to drain).
    idle: asyncio.Event | None = None

    @property
    def name(self) -> str:
        """The model's name."""
        return self.config.name

    @property
    def in_flight(self) -> int:
        """Requests holding the model now."""
        return len(self.leases)

    def touch(self) -> None:
        """Record a use now."""
        self.last_used = time.time()
        self.last_used_monotonic = time.monotonic()

    def idle_event(self) -> asyncio.Event:
        """The event set while no request holds the model (made on first use, on the loop)."""
        if self.idle is None:
            self.idle = asyncio.Event()
            if not self.leases:
                self.idle.set()
        return self.idle

    def describe(self) -> dict[str, Any]:
        """The model's state as the admin API shows it."""
        model = self.model
        device = getattr(model, "device", None)
        return {
            "id": self.name,
            "object": "model",
            "state": self.state.value,
            "reason": self.reason,
            "source": self.config.source,
            "backend": self.config.backend,
            "load": self.config.load,
            "aliases": list(self.config.aliases),
            "context_length": self.config.context_length,
            "max_sequences": self.config.max_sequences,
            "loaded_at": _seconds(self.loaded_at),
            "last_used": _seconds(self.last_used),
            "idle_until": _seconds(self.idle_until),
            "keep_alive": self.keep_alive,
            "in_flight": self.in_flight,
            "device": getattr(device, "kind", None) if device is not None else None,
            "memory_bytes": _memory_bytes(model),
        }


def _seconds(value: float | None) -> int | None:
    return None if value is None else int(value)


def _memory_bytes(model: object) -> int | None:
    """The loaded model file's size: a lower bound of the memory it holds (the memory
    estimate, once wired, replaces it); None when unknown."""
    path = getattr(model, "path", None)
    if path is None:
        return None
    try:
        return int(path.stat().st_size)
    except OSError:
        return None
