"""The fleet's lifecycle rules, on test doubles for the loaded models (the real models are
tests/integration/test_fleet.py's): single-flight loads, failed loads, LRU eviction,
keep_alive, drain-then-cancel, the memory check glue point, aliases."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any

import pytest

from inferflux_core.config import FleetConfig, ModelConfig
from inferflux_core.contracts.generation import InferenceEvent, UsageReport
from inferflux_core.engine.fleet import Fleet
from inferflux_core.engine.fleet_entry import ModelState
from inferflux_core.errors import (
    InferfluxError,
    InvalidRequestError,
    ModelNotFoundError,
    ServiceUnavailableError,
)


def run_async(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """Run an async test on a fresh event loop."""

    @functools.wraps(test)
    def run() -> None:
        asyncio.run(test())

    return run


class ModelDouble:
    """Stands in for a loaded model: a name, and whether it was closed."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.closed = False


class LoaderDouble:
    """Counts loads, can be told to fail or to take time, and records closes."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.loads: list[str] = []
        self.closed: list[str] = []
        self.fail: set[str] = set()

    async def load(self, config: ModelConfig) -> Any:
        self.loads.append(config.name)
        await asyncio.sleep(self.delay)
        if config.name in self.fail:
            raise RuntimeError(f"cannot open {config.source}")
        return ModelDouble(config.name)

    async def close(self, model: Any) -> None:
        model.closed = True
        self.closed.append(model.name)


class MemoryCheckDouble:
    """A memory check that refuses a load while more than ``room`` models are loaded."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.calls: list[tuple[str, list[str]]] = []

    def __call__(self, config: ModelConfig, loaded: Sequence[ModelConfig]) -> None:
        self.calls.append((config.name, [c.name for c in loaded]))
        if len(loaded) > self.room - 1:
            raise InferfluxError(f"{config.name} needs 300 MB; 100 MB are free")


def models(*names: str, **extra: Any) -> list[ModelConfig]:
    return [
        ModelConfig(name=n, source=f"/models/{n}.gguf", load="on_demand", **extra) for n in names
    ]


def make_fleet(
    configs: list[ModelConfig], loader: LoaderDouble, **settings: Any
) -> tuple[Fleet, dict[str, Any]]:
    served: dict[str, Any] = {}
    fleet = Fleet(
        configs,
        FleetConfig(**settings),
        load_model=loader.load,
        close_model=loader.close,
        served=served,
        queue_timeout=5.0,
    )
    return fleet, served


async def events(count: int, gap: float, finished: list[str]) -> AsyncIterator[InferenceEvent]:
    """A request's events, one every ``gap`` seconds; records that it was closed."""
    try:
        for _ in range(count):
            await asyncio.sleep(gap)
            yield UsageReport(1, 1)
    finally:
        finished.append("closed")


@run_async
async def test_lifecycle_goes_registered_loading_ready_unloading_registered() -> None:
    loader = LoaderDouble(delay=0.05)
    fleet, served = make_fleet(models("a"), loader)
    assert fleet.entry("a").state is ModelState.REGISTERED
    loading = asyncio.create_task(fleet.load("a"))
    await asyncio.sleep(0.01)
    assert fleet.entry("a").state is ModelState.LOADING
    await loading
    assert fleet.entry("a").state is ModelState.READY and "a" in served
    unloading = asyncio.create_task(fleet.unload("a"))
    await asyncio.sleep(0)
    assert fleet.entry("a").state is ModelState.UNLOADING and "a" not in served
    await unloading
    assert fleet.entry("a").state is ModelState.REGISTERED and loader.closed == ["a"]


@run_async
async def test_concurrent_loads_of_one_model_load_it_once() -> None:
    loader = LoaderDouble(delay=0.05)
    fleet, _ = make_fleet(models("a"), loader)
    await asyncio.gather(*(fleet.load("a") for _ in range(5)), fleet.admit("a"))
    assert loader.loads == ["a"]


@run_async
async def test_a_failed_load_names_its_reason_and_leaves_nothing_loaded() -> None:
    loader = LoaderDouble(delay=0.02)
    loader.fail.add("a")
    fleet, served = make_fleet(models("a"), loader)
    waiters = [asyncio.create_task(fleet.admit("a")) for _ in range(3)]
    results = await asyncio.gather(*waiters, return_exceptions=True)
    for result in results:
        assert isinstance(result, ServiceUnavailableError)
        assert result.code == "model_load_failed" and "cannot open" in result.message
    entry = fleet.entry("a")
    assert entry.state is ModelState.FAILED and "cannot open" in (entry.reason or "")
    assert served == {} and loader.loads == ["a"]
    loader.fail.clear()
    await fleet.load("a")  # a later load retries
    assert entry.state is ModelState.READY and entry.reason is None


@run_async
async def test_without_autoload_a_registered_model_is_refused() -> None:
    fleet, _ = make_fleet(models("a"), LoaderDouble(), autoload=False)
    with pytest.raises(ServiceUnavailableError) as refused:
        await fleet.admit("a")
    assert refused.value.code == "model_not_loaded" and "/load" in refused.value.message


@run_async
async def test_the_least_recently_used_idle_model_is_evicted_first() -> None:
    loader = LoaderDouble()
    fleet, served = make_fleet(models("a", "b", "c"), loader, max_loaded_models=2)
    await fleet.load("a")
    await fleet.load("b")
    _, lease = await fleet.admit("a")  # a is now the more recent
    lease.release()
    await fleet.load("c")
    assert list(served) == ["a", "c"] and loader.closed == ["b"]


@run_async
async def test_a_model_with_requests_in_flight_is_never_evicted() -> None:
    loader = LoaderDouble()
    fleet, served = make_fleet(models("a", "b"), loader, max_loaded_models=1)
    _, lease = await fleet.admit("a")
    with pytest.raises(ServiceUnavailableError) as full:
        await fleet.load("b")
    assert full.value.code == "model_load_failed" and "requests in flight" in full.value.message
    assert list(served) == ["a"] and loader.closed == []
    lease.release()
    await fleet.load("b")
    assert list(served) == ["b"]


@run_async
async def test_keep_alive_zero_unloads_right_after_the_request() -> None:
    loader = LoaderDouble()
    fleet, served = make_fleet(models("a", keep_alive=0), loader)
    _, lease = await fleet.admit("a")
    finished: list[str] = []
    async for _ in lease.bind(events(2, 0.0, finished)):
        pass
    await asyncio.sleep(0.05)
    assert served == {} and fleet.entry("a").state is ModelState.REGISTERED


@run_async
async def test_an_idle_model_unloads_when_its_keep_alive_runs_out() -> None:
    fleet, served = make_fleet(models("a"), LoaderDouble(), default_keep_alive="150ms")
    _, lease = await fleet.admit("a")
    assert fleet.entry("a").idle_until is None  # never while a request holds it
    lease.release()
    assert fleet.entry("a").idle_until is not None
    await asyncio.sleep(0.05)
    assert "a" in served
    await asyncio.sleep(0.3)
    assert served == {}


@run_async
async def test_a_request_keep_alive_stays_in_force_for_the_model() -> None:
    fleet, served = make_fleet(models("a"), LoaderDouble(), default_keep_alive="1h")
    _, lease = await fleet.admit("a", keep_alive=0.0)
    lease.release()
    await asyncio.sleep(0.05)
    assert served == {}
    _, lease = await fleet.admit("a", keep_alive=None)  # forever
    lease.release()
    assert fleet.entry("a").idle_until is None and "a" in served


@run_async
async def test_unload_waits_for_running_requests_to_finish() -> None:
    fleet, _ = make_fleet(models("a"), LoaderDouble())
    _, lease = await fleet.admit("a")
    finished: list[str] = []
    leased = lease.bind(events(3, 0.05, finished))
    unloading = asyncio.create_task(fleet.unload("a", grace=5.0))
    seen = [event async for event in leased]
    await unloading
    assert len(seen) == 3 and finished == ["closed"]
    assert fleet.entry("a").state is ModelState.REGISTERED


@run_async
async def test_after_the_grace_period_running_requests_get_a_clear_error() -> None:
    loader = LoaderDouble()
    fleet, _ = make_fleet(models("a"), loader)
    _, lease = await fleet.admit("a")
    finished: list[str] = []
    leased = lease.bind(events(1000, 0.02, finished))
    unloading = asyncio.create_task(fleet.unload("a", grace=0.1))
    with pytest.raises(ServiceUnavailableError) as cancelled:
        async for _ in leased:
            pass
    await unloading
    assert cancelled.value.code == "model_unloaded" and "grace period" in cancelled.value.message
    assert finished == ["closed"]  # the request was closed: its sequences are freed
    assert fleet.entry("a").in_flight == 0 and loader.closed == ["a"]


@run_async
async def test_a_load_the_memory_check_refuses_evicts_idle_models_first() -> None:
    loader = LoaderDouble()
    fleet, served = make_fleet(models("a", "b"), loader)
    fleet.memory_check = MemoryCheckDouble(room=1)
    await fleet.load("a")
    await fleet.load("b")
    assert list(served) == ["b"] and loader.closed == ["a"]


@run_async
async def test_a_load_that_cannot_fit_is_refused_with_the_checks_reason() -> None:
    loader = LoaderDouble()
    fleet, served = make_fleet(models("a", "b"), loader)
    fleet.memory_check = MemoryCheckDouble(room=1)
    _, lease = await fleet.admit("a")  # busy: cannot be evicted
    with pytest.raises(ServiceUnavailableError) as refused:
        await fleet.load("b")
    assert "needs 300 MB; 100 MB are free" in refused.value.message
    assert fleet.entry("b").state is ModelState.FAILED and loader.loads == ["a"]
    assert list(served) == ["a"]
    lease.release()


@run_async
async def test_aliases_resolve_to_their_model_and_names_stay_unique() -> None:
    fleet, _ = make_fleet(models("a", aliases=["default", "gpt-4o-mini"]), LoaderDouble())
    assert fleet.entry("gpt-4o-mini").name == "a"
    model, lease = await fleet.admit("default")
    assert model.name == "a"
    lease.release()
    with pytest.raises(ModelNotFoundError):
        fleet.entry("nope")
    with pytest.raises(InvalidRequestError):
        fleet.register(ModelConfig(name="default", source="/m.gguf"))


@run_async
async def test_remove_unloads_then_forgets_the_model() -> None:
    loader = LoaderDouble()
    fleet, served = make_fleet(models("a", aliases=["x"]), loader)
    await fleet.load("a")
    await fleet.remove("x")
    assert served == {} and loader.closed == ["a"]
    with pytest.raises(ModelNotFoundError):
        fleet.entry("a")
    with pytest.raises(ModelNotFoundError):
        fleet.entry("x")


@run_async
async def test_a_failed_startup_load_raises_its_own_error() -> None:
    loader = LoaderDouble()
    loader.fail.add("a")
    fleet, served = make_fleet([ModelConfig(name="a", source="/models/a.gguf")], loader)
    with pytest.raises(RuntimeError, match=r"cannot open /models/a\.gguf"):
        await fleet.start()
    assert served == {} and fleet.entry("a").state is ModelState.FAILED


@run_async
async def test_a_reader_cancelled_by_its_client_frees_the_request_and_the_model() -> None:
    fleet, _ = make_fleet(models("a"), LoaderDouble())
    _, lease = await fleet.admit("a")
    finished: list[str] = []
    leased = lease.bind(events(1000, 0.02, finished))

    async def read() -> None:
        async for _ in leased:
            pass

    reader = asyncio.create_task(read())
    await asyncio.sleep(0.05)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    assert finished == ["closed"] and fleet.entry("a").in_flight == 0
