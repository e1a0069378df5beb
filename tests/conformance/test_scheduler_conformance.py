"""The bundled ``continuous`` scheduler passes the conformance kit."""

from __future__ import annotations

from inferflux_core.testing import SchedulerConformance


class TestContinuousScheduler(SchedulerConformance):
    """``continuous`` with its default options."""

    scheduler_name = "continuous"
