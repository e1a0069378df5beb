"""The models of one server as a fleet: registered, loaded and unloaded at runtime.

Every model has a lifecycle (:class:`~inferflux_core.engine.fleet_entry.ModelState`):
``registered`` -> ``loading`` -> ``ready`` | ``failed`` -> ``unloading`` -> ``registered``.
The :class:`Fleet` moves models between states on the server's event loop; the loading itself
runs in a worker thread. Rules (docs/fleet.md):

- two loads (or a load and an unload) of one model never run at once: the second waits for
  the first (:attr:`FleetEntry.transition`);
- a request naming a registered model that is not loaded loads it (``fleet.autoload``) and
  waits, bounded by its deadline or ``scheduler.queue_timeout``; a failed load answers every
  waiting request with a 503 naming the reason;
- at ``fleet.max_loaded_models``, and when the memory check refuses a load, the
  least-recently-used idle model is unloaded first; a model with requests in flight is never
  evicted;
- an idle model is unloaded when its ``keep_alive`` runs out (a timer on the loop);
- an unload drains the model's requests, and after ``fleet.unload_grace_seconds`` cancels
  the rest with a 503 (a stream error event) to their clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import (
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    MutableMapping,
    Sequence,
)
from typing import TypeAlias

from inferflux_core.config import FleetConfig, ModelConfig
from inferflux_core.engine.adapters import Configured
from inferflux_core.engine.fleet_entry import FleetEntry, ModelState
from inferflux_core.engine.fleet_lease import LeasedEvents
from inferflux_core.engine.model import LoadedModel
from inferflux_core.engine.request_model import RequestModel
from inferflux_core.errors import (
    InferfluxError,
    InvalidRequestError,
    ModelNotFoundError,
    ServiceUnavailableError,
)

#: A model the fleet serves (the engine's ``ServedModel``).
Served: TypeAlias = LoadedModel | RequestModel

log = logging.getLogger(__name__)

#: Loads one model (off the event loop: the engine runs the blocking part in a thread) and
#: returns it ready to serve; raises, leaving nothing loaded, if it cannot.
LoadModel = Callable[[ModelConfig], Awaitable[Served]]
#: Stops a loaded model and releases its backend.
CloseModel = Callable[[Served], Awaitable[None]]
#: The memory check before a load (glue point for ``inferflux_core.engine.memory``): called
#: with the model about to load and the configs of the models loaded now; raises an
#: :class:`~inferflux_core.errors.InferfluxError` (the reason, naming both figures) when the
#: model would not fit. The fleet then unloads idle models, least recently used first, and
#: asks again; with none left to unload, the load fails with that error. None: no check.
MemoryCheck = Callable[[ModelConfig, Sequence[ModelConfig]], None]

#: A request's keep_alive was not given (the model's own applies).
UNSET_KEEP_ALIVE: float = float("nan")


class Fleet:
    """Registered models by name and alias, their states, and the loads and unloads."""

    def __init__(
        self,
        configs: Iterable[ModelConfig],
        settings: FleetConfig,
        *,
        load_model: LoadModel,
        close_model: CloseModel,
        served: MutableMapping[str, Served],
        queue_timeout: float = 300.0,
        memory_check: MemoryCheck | None = None,
        on_state: Callable[[str, str], None] | None = None,
    ) -> None:
        self.settings = settings
        #: Told each model's new state (name, state) as it changes: the metrics' state gauge.
        self._on_state = on_state
        self._load_model = load_model
        self._close_model = close_model
        #: The ready models by name, in registration order (the engine's ``models``).
        self._served = served
        self._queue_timeout = queue_timeout
        #: Runs before each load and raises if the model does not fit (the engine passes the
        #: memory estimate, ``engine.memory_check.ModelMemoryCheck``). None: not checked.
        self.memory_check = memory_check
        self._default_keep_alive = settings.default_keep_alive_seconds()
        self._entries: dict[str, FleetEntry] = {}
        self._aliases: dict[str, str] = {}
        for config in configs:
            self.register(config)

    def _set_state(self, entry: FleetEntry, state: ModelState) -> None:
        entry.state = state
        if self._on_state is not None:
            self._on_state(entry.name, state.value)

    # -- the registry ------------------------------------------------------------------------

    def register(self, config: ModelConfig) -> FleetEntry:
        """Add ``config`` as a ``registered`` model (400 if its name or an alias is taken)."""
        taken = [n for n in (config.name, *config.aliases) if self._known(n)]
        if taken:
            raise InvalidRequestError(
                f"a model or alias is already called {', '.join(map(repr, taken))}",
                param="name",
                code="model_exists",
            )
        entry = FleetEntry(config, keep_alive=config.keep_alive_seconds(self._default_keep_alive))
        self._entries[config.name] = entry
        self._set_state(entry, entry.state)
        for alias in config.aliases:
            self._aliases[alias] = config.name
        return entry

    async def remove(self, name: str) -> FleetEntry:
        """Unload ``name`` (draining it) and forget it."""
        entry = self.entry(name)
        await self.unload(entry.name)
        if self._entries.get(entry.name) is entry and entry.state is ModelState.REGISTERED:
            del self._entries[entry.name]
            for alias in entry.config.aliases:
                self._aliases.pop(alias, None)
        return entry

    def _known(self, name: str) -> bool:
        return name in self._entries or name in self._aliases

    def resolve(self, name: str) -> str:
        """The model a name or alias means (``ModelNotFoundError`` for neither)."""
        if name in self._entries:
            return name
        if name in self._aliases:
            return self._aliases[name]
        raise ModelNotFoundError(
            f"the model {name!r} does not exist; available: {', '.join(self._entries)}",
            param="model",
        )

    def entry(self, name: str) -> FleetEntry:
        """The registered model called ``name`` (or by that alias)."""
        return self._entries[self.resolve(name)]

    def entries(self) -> list[FleetEntry]:
        """Every registered model, in registration order."""
        return list(self._entries.values())

    def aliases(self) -> dict[str, str]:
        """Alias -> model name."""
        return dict(self._aliases)

    # -- requests -----------------------------------------------------------------------------

    async def admit(
        self,
        name: str,
        *,
        deadline: float | None = None,
        keep_alive: float | None = UNSET_KEEP_ALIVE,
    ) -> tuple[Served, LeasedEvents]:
        """The ready model ``name`` names, held for one request: the lease counts it in
        flight until the request's events (:meth:`LeasedEvents.bind`) end, or until
        :meth:`LeasedEvents.release`. A registered model is loaded first (if
        ``fleet.autoload``), waiting at most until ``deadline`` (``time.monotonic()``) or
        ``scheduler.queue_timeout``. Refusals: 404 unknown; 503 not loaded, failed, timed out.
        ``keep_alive``: the request's own (seconds; None: forever), which stays in force for
        the model, as Ollama's does."""
        entry = self.entry(name)
        while entry.state is not ModelState.READY or entry.model is None:
            timeout = self._wait_limit(deadline)
            try:
                await asyncio.wait_for(
                    self._until_ready(entry, autoload=self.settings.autoload), timeout
                )
            except TimeoutError:
                raise ServiceUnavailableError(
                    f"model {entry.name!r} did not finish loading in time ({timeout:g} s)",
                    code="model_loading",
                    headers={"Retry-After": "5"},
                ) from None
        lease = LeasedEvents(lambda held: self._release(entry, held))
        entry.leases.add(lease)
        entry.idle_event().clear()
        entry.touch()
        self._cancel_timer(entry)
        if keep_alive is None or keep_alive == keep_alive:  # not NaN: given
            entry.keep_alive = keep_alive
        return entry.model, lease

    def _release(self, entry: FleetEntry, lease: LeasedEvents) -> None:
        if lease not in entry.leases:
            return
        entry.leases.discard(lease)
        entry.touch()
        if not entry.leases:
            entry.idle_event().set()
            if entry.state is ModelState.READY:
                self._schedule_expiry(entry)

    def _wait_limit(self, deadline: float | None) -> float | None:
        limit = self._queue_timeout or None
        if deadline is not None:
            left = max(0.0, deadline - time.monotonic())
            limit = left if limit is None else min(limit, left)
        return limit

    async def _until_ready(self, entry: FleetEntry, *, autoload: bool = True) -> FleetEntry:
        while entry.state is not ModelState.READY:
            if self._entries.get(entry.name) is not entry:
                raise ModelNotFoundError(f"the model {entry.name!r} was removed", param="model")
            if entry.transition is not None:
                loading = entry.state is ModelState.LOADING
                await asyncio.shield(_quietly(entry.transition))
                if loading and entry.state is ModelState.FAILED:
                    raise _load_failed(entry)
                continue
            if not autoload:
                raise ServiceUnavailableError(
                    f"model {entry.name!r} is {entry.state.value}, not loaded, and this server "
                    "does not load models on demand (fleet.autoload is false); load it with "
                    f"POST /v1/admin/models/{entry.name}/load",
                    code="model_not_loaded",
                )
            self._start_load(entry)
        return entry

    # -- loading --------------------------------------------------------------------------------

    async def load(self, name: str) -> FleetEntry:
        """Load ``name`` (waiting for a load or unload already running) and return it ready;
        a 503 naming the reason if the load fails."""
        entry = self.entry(name)
        await self._until_ready(entry)
        return entry

    def _start_load(self, entry: FleetEntry) -> None:
        self._set_state(entry, ModelState.LOADING)
        entry.reason = None
        entry.transition = asyncio.get_running_loop().create_task(
            self._load(entry), name=f"inferflux-load-{entry.name}"
        )

    async def _load(self, entry: FleetEntry) -> None:
        started = time.monotonic()
        try:
            await self._make_room(entry)
            await self._check_memory(entry)
            model = await self._load_model(entry.config)
        except BaseException as exc:
            self._set_state(entry, ModelState.FAILED)
            entry.reason = _reason(exc)
            entry.error = exc
            log.warning("model %s failed to load: %s", entry.name, entry.reason)
            if not isinstance(exc, Exception):
                raise
        else:
            self.adopt(entry.name, model)
            log.info("model %s ready in %.1f s", entry.name, time.monotonic() - started)
        finally:
            entry.transition = None

    def adopt(self, name: str, model: Served) -> None:
        """Mark ``name`` ready, serving ``model`` (loaded by the engine's own blocking path)."""
        entry = self._entries[name]
        entry.model = model
        self._set_state(entry, ModelState.READY)
        entry.reason = None
        entry.error = None
        entry.loaded_at = time.time()
        entry.touch()
        self._publish()
        if entry.keep_alive:  # 0: unloaded after its first request, not before it
            with contextlib.suppress(RuntimeError):  # no running loop: attach() starts it
                self._schedule_expiry(entry)

    async def _make_room(self, entry: FleetEntry) -> None:
        limit = self.settings.max_loaded_models
        if limit is None:
            return
        while len(self._holding_memory(entry)) >= limit:
            victim = self._eviction_candidate(entry)
            if victim is None:
                raise ServiceUnavailableError(
                    f"cannot load model {entry.name!r}: fleet.max_loaded_models ({limit}) "
                    "are loaded and every one has requests in flight",
                    code="fleet_full",
                    headers={"Retry-After": "5"},
                )
            log.info("unloading idle model %s to make room for %s", victim.name, entry.name)
            await self.unload(victim.name)

    async def _check_memory(self, entry: FleetEntry) -> None:
        check = self.memory_check
        if check is None:
            return
        while True:
            loaded = [e.config for e in self._holding_memory(entry)]
            try:
                await asyncio.to_thread(check, entry.config, loaded)
                return
            except InferfluxError:
                victim = self._eviction_candidate(entry)
                if victim is None:
                    raise
                log.info("unloading idle model %s: %s does not fit", victim.name, entry.name)
                await self.unload(victim.name)

    def _holding_memory(self, entry: FleetEntry) -> list[FleetEntry]:
        holding = (ModelState.READY, ModelState.LOADING, ModelState.UNLOADING)
        return [e for e in self._entries.values() if e is not entry and e.state in holding]

    def _eviction_candidate(self, entry: FleetEntry) -> FleetEntry | None:
        """The least-recently-used ready model with no request in flight, or a model being
        unloaded already (waited for); None if every loaded model is busy."""
        others = [e for e in self._entries.values() if e is not entry]
        unloading = [e for e in others if e.state is ModelState.UNLOADING]
        if unloading:
            return unloading[0]
        idle = [e for e in others if e.state is ModelState.READY and not e.leases]
        return min(idle, key=lambda e: e.last_used_monotonic, default=None)

    # -- unloading ------------------------------------------------------------------------------

    async def unload(self, name: str, *, grace: float | None = None) -> FleetEntry:
        """Unload ``name``: no new request is admitted, running ones may finish for ``grace``
        seconds (``fleet.unload_grace_seconds``), then the rest are cancelled with a 503."""
        entry = self.entry(name)
        while True:
            if entry.transition is not None:
                await asyncio.shield(_quietly(entry.transition))
                continue
            if entry.state is ModelState.READY:
                self._start_unload(entry, grace)
                continue
            if entry.state is ModelState.FAILED:
                self._set_state(entry, ModelState.REGISTERED)
            return entry

    def _start_unload(self, entry: FleetEntry, grace: float | None) -> None:
        self._set_state(entry, ModelState.UNLOADING)
        self._cancel_timer(entry)
        entry.idle_until = None
        self._publish()
        limit = self.settings.unload_grace_seconds if grace is None else grace
        entry.transition = asyncio.get_running_loop().create_task(
            self._unload(entry, limit), name=f"inferflux-unload-{entry.name}"
        )

    async def _unload(self, entry: FleetEntry, grace: float) -> None:
        try:
            idle = entry.idle_event()
            try:
                if not idle.is_set():
                    await asyncio.wait_for(idle.wait(), grace)
            except TimeoutError:
                error = ServiceUnavailableError(
                    f"model {entry.name!r} was unloaded while this request ran (it did not "
                    f"finish within the {grace:g} s grace period); retry the request",
                    code="model_unloaded",
                )
                log.warning("model %s: cancelling %d requests", entry.name, entry.in_flight)
                for lease in list(entry.leases):
                    lease.cancel(error)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(idle.wait(), 30)
            model, entry.model = entry.model, None
            if model is not None:
                try:
                    await self._close_model(model)
                except Exception as exc:
                    log.warning("model %s failed to close: %s", entry.name, exc)
            log.info("model %s unloaded", entry.name)
        finally:
            self._set_state(entry, ModelState.REGISTERED)
            entry.loaded_at = None
            entry.transition = None

    # -- keep_alive -----------------------------------------------------------------------------

    def attach(self) -> None:
        """Start the keep_alive timers of idle ready models on the running loop (the server's,
        once it runs; models loaded before it by the blocking path had none)."""
        for entry in self._entries.values():
            if entry.state is ModelState.READY and not entry.leases and entry.keep_alive:
                self._schedule_expiry(entry)

    def _schedule_expiry(self, entry: FleetEntry) -> None:
        self._cancel_timer(entry)
        keep_alive = entry.keep_alive
        if keep_alive is None:
            entry.idle_until = None
            return
        loop = asyncio.get_running_loop()
        entry.idle_until = time.time() + keep_alive
        entry.timer = loop.call_later(keep_alive, self._expire, entry)

    def _cancel_timer(self, entry: FleetEntry) -> None:
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None
        entry.idle_until = None

    def _expire(self, entry: FleetEntry) -> None:
        entry.timer = None
        if entry.state is ModelState.READY and not entry.leases and entry.transition is None:
            log.info("model %s: keep_alive ran out; unloading", entry.name)
            self._start_unload(entry, 0.0)

    # -- the whole fleet ------------------------------------------------------------------------

    async def start(self) -> None:
        """Load every ``load: startup`` model, in order; the first failure raises its own
        exception (a ``ConfigError``, a ``ModelFileError``, ...)."""
        for entry in self.entries():
            if entry.config.load == "startup" and entry.state is not ModelState.READY:
                try:
                    await self._until_ready(entry)
                except ServiceUnavailableError:
                    if entry.error is not None:
                        raise entry.error from None
                    raise

    async def close(self) -> None:
        """Unload every model at once (server shutdown: no grace)."""
        for entry in self.entries():
            self._cancel_timer(entry)
        await asyncio.gather(
            *(self.unload(e.name, grace=0.0) for e in self.entries()), return_exceptions=True
        )

    def forget_loaded(self) -> list[Served]:
        """Mark every model registered and return the ones that were loaded (for the engine's
        blocking shutdown, which closes them itself)."""
        models = []
        for entry in self._entries.values():
            if entry.timer is not None:
                entry.timer.cancel()
                entry.timer = None
            if entry.model is not None:
                models.append(entry.model)
            entry.model, entry.state, entry.loaded_at, entry.idle_until = (
                None,
                ModelState.REGISTERED,
                None,
                None,
            )
        self._publish()
        return models

    def _publish(self) -> None:
        """Rebuild the engine's map of ready models (registration order)."""
        ready = {
            e.name: e.model
            for e in self._entries.values()
            if e.state is ModelState.READY and e.model is not None
        }
        self._served.clear()
        self._served.update(ready)

    def startup_models(self) -> list[str]:
        """The names of the ``load: startup`` models (``/readyz`` waits for them)."""
        return [e.name for e in self._entries.values() if e.config.load == "startup"]


async def _quietly(task: asyncio.Task[None]) -> None:
    with contextlib.suppress(Exception):
        await task


def _reason(exc: BaseException) -> str:
    message = exc.message if isinstance(exc, InferfluxError) else str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _load_failed(entry: FleetEntry) -> ServiceUnavailableError:
    return ServiceUnavailableError(
        f"model {entry.name!r} failed to load: {entry.reason}",
        code="model_load_failed",
    )


class FleetConfigs(Mapping[str, Configured]):
    """Every registered model by name and by alias, as its loaded model where it is loaded
    (whose config also holds the adapters registered at runtime), else as its registration:
    what project scoping reads (``inferflux_core.auth.projects``)."""

    def __init__(self, fleet: Fleet) -> None:
        self._fleet = fleet

    def __getitem__(self, name: str) -> Configured:
        try:
            entry = self._fleet.entry(name)
        except ModelNotFoundError:
            raise KeyError(name) from None
        return entry.model if entry.model is not None else entry

    def __iter__(self) -> Iterator[str]:
        for entry in self._fleet.entries():
            yield entry.name
            yield from entry.config.aliases

    def __len__(self) -> int:
        return sum(1 + len(entry.config.aliases) for entry in self._fleet.entries())
