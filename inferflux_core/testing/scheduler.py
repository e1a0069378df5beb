"""Conformance tests for schedulers (:class:`~inferflux_core.contracts.Scheduler`).

Subclass :class:`SchedulerConformance`, set ``scheduler_name`` (and ``scheduler_options``),
and every test drives the scheduler the installed plugins register under that name through a
:class:`~inferflux_core.testing.simulation.SimulatedEngine`, which checks each plan against
the contract: token budget, prefill chunk, ``max_sequences``, KV capacity, a decode step for
every running sequence, preemption only when the engine can preempt. Aging and preemption
are a scheduler's own options: set ``aging_options`` / ``preemption_options`` to the options
that turn them on, and their tests run too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import pytest

from inferflux_core.contracts import Scheduler, SchedulerLimits, SequenceStatus
from inferflux_core.contracts.options import checked_options, options_of
from inferflux_core.errors import ConfigError, QueueFullError
from inferflux_core.testing.lookup import plugin_factory
from inferflux_core.testing.settings import PluginSettings
from inferflux_core.testing.simulation import SimulatedEngine

#: Roomy limits; each test narrows the ones it is about.
BASE_LIMITS = SchedulerLimits(
    max_sequences=3,
    context_length=4096,
    kv_capacity=4096 * 3,
    token_budget=32,
    prefill_chunk=8,
    max_queue=32,
)

SchedulerFactory = Callable[..., Scheduler]


class SchedulerConformance:
    """The scheduler contract as tests. Set ``scheduler_name``."""

    #: The name the scheduler is registered under (``scheduler.name``).
    scheduler_name: ClassVar[str] = ""
    #: ``scheduler.options`` to construct it with.
    scheduler_options: ClassVar[dict[str, Any]] = {}
    #: Options (added to ``scheduler_options``) under which a long-waiting request gains
    #: priority; None if the scheduler does not age requests (that test is skipped).
    aging_options: ClassVar[dict[str, Any] | None] = None
    #: Options under which a more urgent request preempts a running one, when the engine
    #: can preempt; None if the scheduler never preempts (that test is skipped).
    preemption_options: ClassVar[dict[str, Any] | None] = None

    @pytest.fixture(scope="class")
    @classmethod
    def scheduler_settings(cls) -> PluginSettings:
        """What to construct; override this fixture to compute it (the CLI options do)."""
        if not cls.scheduler_name:
            pytest.fail(f"{cls.__name__} must set scheduler_name")
        return PluginSettings(cls.scheduler_name, cls.scheduler_options)

    @pytest.fixture
    def make_scheduler(self, scheduler_settings: PluginSettings) -> SchedulerFactory:
        """``make_scheduler(options=None, **limit_changes)``: a new scheduler with
        ``BASE_LIMITS`` changed and ``options`` added to the configured ones."""
        factory = plugin_factory("schedulers", scheduler_settings.name)

        def make(options: dict[str, Any] | None = None, **changes: Any) -> Scheduler:
            limits = dataclasses.replace(BASE_LIMITS, **changes)
            scheduler: Scheduler = factory(limits, **scheduler_settings.options, **(options or {}))
            return scheduler

        return make

    def engine(
        self,
        make_scheduler: SchedulerFactory,
        options: dict[str, Any] | None = None,
        **changes: Any,
    ) -> SimulatedEngine:
        """A simulated engine around a new scheduler."""
        return SimulatedEngine(make_scheduler(options, **changes))

    def test_every_request_completes_within_the_limits(
        self, make_scheduler: SchedulerFactory
    ) -> None:
        engine = self.engine(make_scheduler)
        for i, n_prompt in enumerate((5, 40, 1, 17, 64, 3, 9, 30, 2, 12)):
            engine.submit(n_prompt, priority=i % 3, max_tokens=2 + i % 4)
        engine.run()
        assert sorted(engine.finished) == sorted(engine.requests)
        for request in engine.requests.values():
            assert request.sequence.status is SequenceStatus.FINISHED
            assert len(request.sequence.generated) == request.max_tokens
        assert engine.scheduler.running_count == engine.scheduler.waiting_count == 0

    def test_plans_keep_to_one_adapter_and_every_adapter_finishes(
        self, make_scheduler: SchedulerFactory
    ) -> None:
        engine = self.engine(make_scheduler, max_sequences=6)
        if not engine.scheduler.groups_adapters:
            pytest.skip("the scheduler does not set groups_adapters (it serves no adapters)")
        for i in range(9):
            engine.submit(3 + i, max_tokens=6, adapter=(None, "x", "y")[i % 3])
        engine.run()  # each plan is checked to keep to one adapter
        assert sorted(engine.finished) == sorted(engine.requests)

    def test_an_idle_scheduler_plans_nothing(self, make_scheduler: SchedulerFactory) -> None:
        engine = self.engine(make_scheduler)
        assert not engine.step()
        engine.submit(4)
        engine.run()
        assert not engine.step()

    def test_running_streams_decode_while_a_long_prompt_prefills(
        self, make_scheduler: SchedulerFactory
    ) -> None:
        engine = self.engine(make_scheduler)
        stream = engine.submit(3, max_tokens=30)
        engine.step()
        engine.submit(200, max_tokens=1)
        for _ in range(5):
            plan = engine.step()
            assert any(c.sequence is stream and c.n_tokens == 1 for c in plan.chunks)

    def test_higher_priority_is_admitted_first_and_equals_in_arrival_order(
        self, make_scheduler: SchedulerFactory
    ) -> None:
        engine = self.engine(make_scheduler, max_sequences=1)
        engine.submit(4, name="low-1", waited=3.0)
        engine.submit(4, name="low-2", waited=2.0)
        engine.submit(4, name="high", priority=5, waited=1.0)
        engine.submit(4, name="low-3", waited=0.0)
        engine.run()
        assert engine.admitted == ["high", "low-1", "low-2", "low-3"]

    def test_a_long_waiting_low_priority_request_is_not_starved(
        self, make_scheduler: SchedulerFactory
    ) -> None:
        if self.aging_options is None:
            pytest.skip("the scheduler does not age waiting requests (aging_options is None)")
        engine = self.engine(make_scheduler, options=self.aging_options, max_sequences=1)
        engine.submit(4, name="old-low", priority=0, waited=60.0)
        for i in range(3):
            engine.submit(4, name=f"new-high-{i}", priority=5)
        engine.run()
        assert engine.admitted[0] == "old-low"

    def test_cancelling_a_waiting_request_removes_it(
        self, make_scheduler: SchedulerFactory
    ) -> None:
        engine = self.engine(make_scheduler, max_sequences=1)
        engine.submit(4, name="first")
        gone = engine.submit(4, name="cancelled")
        engine.step()
        engine.cancel(gone)
        assert gone.status is SequenceStatus.FINISHED
        assert engine.scheduler.waiting_count == 0
        engine.run()
        assert engine.admitted == ["first"]

    def test_cancelling_a_running_request_frees_its_slot(
        self, make_scheduler: SchedulerFactory
    ) -> None:
        engine = self.engine(make_scheduler, max_sequences=1)
        long = engine.submit(100, name="long")
        engine.submit(4, name="next")
        engine.step()
        assert long.status is SequenceStatus.RUNNING and not long.prefill_done
        engine.cancel(long)
        plan = engine.step()
        assert [c.sequence.request_id for c in plan.chunks] == ["next"]
        engine.run()
        assert engine.scheduler.running_count == 0

    def test_a_full_queue_refuses_with_queue_full(self, make_scheduler: SchedulerFactory) -> None:
        engine = self.engine(make_scheduler, max_queue=2)
        engine.submit(4)
        engine.submit(4)
        with pytest.raises(QueueFullError) as refused:
            engine.submit(4)
        assert refused.value.status == 429
        assert engine.scheduler.waiting_count == 2

    def test_admission_waits_for_free_kv_cells(self, make_scheduler: SchedulerFactory) -> None:
        engine = self.engine(make_scheduler, kv_capacity=100, token_budget=128, prefill_chunk=64)
        engine.submit(80, name="big", max_tokens=2, waited=1.0)
        engine.submit(30, name="next")
        plan = engine.step()
        assert [c.sequence.request_id for c in plan.chunks] == ["big"]
        engine.run()
        assert engine.admitted == ["big", "next"]

    def test_prompt_chunks_do_not_depend_on_other_requests(
        self, make_scheduler: SchedulerFactory
    ) -> None:
        def chunk_sizes(companions: int) -> list[int]:
            engine = self.engine(make_scheduler, max_sequences=6, token_budget=40)
            target = engine.submit(50, name="target", waited=1.0)
            for _ in range(companions):
                engine.submit(30)
            sizes: list[int] = []
            while not target.prefill_done:
                plan = engine.step()
                sizes += [c.n_tokens for c in plan.chunks if c.sequence is target]
            return sizes

        assert chunk_sizes(0) == chunk_sizes(5)

    def test_without_preemption_running_requests_are_never_preempted(
        self, make_scheduler: SchedulerFactory
    ) -> None:
        engine = self.engine(make_scheduler, max_sequences=1)
        engine.submit(4, name="low", max_tokens=6)
        engine.step()
        engine.submit(4, name="urgent", priority=9)
        engine.run()  # the engine fails any plan that preempts without preemption
        assert engine.admitted == ["low", "urgent"]

    def test_with_preemption_a_higher_priority_request_displaces_the_lowest(
        self, make_scheduler: SchedulerFactory
    ) -> None:
        if self.preemption_options is None:
            pytest.skip("the scheduler never preempts (preemption_options is None)")
        options = self.preemption_options
        engine = self.engine(make_scheduler, options=options, max_sequences=2, preemption=True)
        low = engine.submit(4, name="low", priority=0, max_tokens=8)
        engine.submit(4, name="mid", priority=1, max_tokens=8)
        engine.step()
        engine.submit(4, name="urgent", priority=9)
        plan = engine.step()
        assert list(plan.preempt) == [low]
        assert "urgent" in [c.sequence.request_id for c in plan.chunks]
        engine.run()
        assert len(low.generated) == 8, "the preempted request did not finish"

    def test_without_engine_preemption_nothing_is_preempted(
        self, make_scheduler: SchedulerFactory
    ) -> None:
        engine = self.engine(make_scheduler, options=self.preemption_options, max_sequences=1)
        engine.submit(4, name="low", max_tokens=6)
        engine.step()
        engine.submit(4, name="urgent", priority=9)
        engine.run()  # the engine fails any plan that preempts without preemption
        assert engine.admitted == ["low", "urgent"]

    def test_unknown_options_are_refused(self, scheduler_settings: PluginSettings) -> None:
        """With an options model, the core names the key; without, the constructor raises
        ``TypeError``."""
        factory = plugin_factory("schedulers", scheduler_settings.name)
        options = {**scheduler_settings.options, "no_such_option_xyz": 1}
        model = options_of(factory) if isinstance(factory, type) else None
        if model is None:
            with pytest.raises(TypeError):
                factory(BASE_LIMITS, **options)
            return
        with pytest.raises(ConfigError, match=r"scheduler\.options\.no_such_option_xyz"):
            checked_options(model, options, "scheduler.options")

    def test_the_default_options_are_valid(self, scheduler_settings: PluginSettings) -> None:
        factory = plugin_factory("schedulers", scheduler_settings.name)
        model = options_of(factory) if isinstance(factory, type) else None
        options = checked_options(model, scheduler_settings.options, "scheduler.options")
        assert isinstance(factory(BASE_LIMITS, **options), Scheduler)
