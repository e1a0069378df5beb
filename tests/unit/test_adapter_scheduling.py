"""Adapters in the core: names, the continuous scheduler's one adapter per step, KV slots."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from inferflux_core.config import AdapterConfig, ModelConfig
from inferflux_core.contracts import ScheduledSequence, SchedulerLimits
from inferflux_core.engine import adapters
from inferflux_core.engine.slots import KVSlots
from inferflux_core.errors import InvalidRequestError
from inferflux_plugins.schedulers.continuous import ContinuousBatchingScheduler
from tests.unit.test_scheduler import _run  # plan a step, play the engine's part


@dataclass
class Served:
    """A served model, as far as adapter lookup cares."""

    config: ModelConfig


def _limits(max_sequences: int = 6) -> SchedulerLimits:
    return SchedulerLimits(
        max_sequences=max_sequences,
        context_length=1000,
        kv_capacity=10_000,
        token_budget=64,
        prefill_chunk=16,
        max_queue=16,
    )


def _seq(name: str, adapter: str | None, arrival: float, n_prompt: int = 4) -> ScheduledSequence:
    return ScheduledSequence(
        request_id=name, prompt_tokens=list(range(n_prompt)), arrival=arrival, adapter=adapter
    )


def test_every_step_feeds_one_adapter_and_adapters_take_turns() -> None:
    scheduler = ContinuousBatchingScheduler(_limits(), prefill_sequences=0)
    groups = {"b": None, "x": "x", "y": "y"}
    for i, (prefix, adapter) in enumerate(groups.items()):
        for j in range(2):
            scheduler.add(_seq(f"{prefix}{j}", adapter, arrival=i * 2 + j))
    served = []
    for _ in range(9):
        chunks = _run(scheduler)
        adapters_in_step = {c.sequence.adapter for c in chunks}
        assert len(adapters_in_step) == 1
        assert len(chunks) == 2  # both sequences of the adapter whose turn it is
        served.append(adapters_in_step.pop())
    assert served == [None, "x", "y"] * 3


def test_a_lone_adapter_runs_every_step() -> None:
    scheduler = ContinuousBatchingScheduler(_limits(), prefill_sequences=0)
    scheduler.add(_seq("x0", "x", 0))
    scheduler.add(_seq("x1", "x", 1))
    for _ in range(3):
        assert len(_run(scheduler)) == 2


def test_a_new_adapter_is_not_starved_by_a_busy_base() -> None:
    scheduler = ContinuousBatchingScheduler(_limits(), prefill_sequences=0)
    for i in range(5):
        scheduler.add(_seq(f"b{i}", None, i))
    _run(scheduler)
    scheduler.add(_seq("late", "x", 10))
    seen = {c.sequence.request_id for _ in range(2) for c in _run(scheduler)}
    assert "late" in seen


def test_kv_slots_never_share_a_prefix_across_adapters() -> None:
    slots = KVSlots(4, reuse=True, align=4)
    prompt = list(range(40))
    base, adapted = slots.allocate() or 0, slots.allocate() or 0
    slots.prompt_prefilled(base, prompt, None)
    assert slots.find_prefix([*prompt, 1], "x") is None
    assert slots.find_prefix([*prompt, 1], None) is not None
    assert slots.release(base, prompt, None) is True
    slots.prompt_prefilled(adapted, prompt, "x")
    hit = slots.find_prefix([*prompt, 1], "x")
    assert hit is not None and hit.source == adapted
    slots.forget(adapted)
    assert slots.find_prefix([*prompt, 1], "x") is None


def test_names_pick_the_adapter_and_a_whole_name_wins() -> None:
    base = ModelConfig(name="m", adapters=[AdapterConfig(name="a", source="a.gguf")])
    colon = ModelConfig(name="m:a")
    models = {"m": Served(base)}
    assert adapters.resolve(models, "m") == (models["m"], None)
    assert adapters.resolve(models, "m:a") == (models["m"], base.adapters[0])
    assert adapters.resolve(models, "m:b") is None
    assert adapters.resolve(models, "n:a") is None
    both = {"m": Served(base), "m:a": Served(colon)}
    assert adapters.resolve(both, "m:a") == (both["m:a"], None)


def test_the_adapter_field_folds_into_the_model_name() -> None:
    assert adapters.qualified_name("m", None) == "m"
    assert adapters.qualified_name("m", "a") == "m:a"
    assert adapters.qualified_name("m:a", "a") == "m:a"
    with pytest.raises(InvalidRequestError):
        adapters.qualified_name("m", 7)
    with pytest.raises(InvalidRequestError):
        adapters.qualified_name("m", "a" * 65)


def test_adapter_names_are_checked_and_unique() -> None:
    with pytest.raises(ValueError):
        AdapterConfig(name="a:b", source="x.gguf")
    with pytest.raises(ValueError):
        AdapterConfig(name="a", source="x.gguf", scale=100.0)
    with pytest.raises(ValueError):
        ModelConfig(
            adapters=[AdapterConfig(name="a", source="x"), AdapterConfig(name="a", source="y")]
        )
