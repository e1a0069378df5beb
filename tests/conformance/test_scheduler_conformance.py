"""The bundled ``continuous`` scheduler passes the conformance kit."""

from __future__ import annotations

from inferflux_core.testing import SchedulerConformance


class TestContinuousScheduler(SchedulerConformance):
    """``continuous`` with its default options; aging and preemption as its options say."""

    scheduler_name = "continuous"
    aging_options = {"aging_per_second": 1.0}
    preemption_options = {"preemption": True}
