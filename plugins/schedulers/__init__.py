"""Bundled schedulers."""

from __future__ import annotations

from inferflux_core.hookspecs import hookimpl
from inferflux_plugins.schedulers.continuous import ContinuousBatchingScheduler

#: The version of inferflux's hook contract this plugin was written against.
INFERFLUX_HOOKSPEC_VERSION = 1


@hookimpl
def register_schedulers() -> dict[str, type[ContinuousBatchingScheduler]]:
    """The continuous-batching scheduler, as ``continuous``."""
    return {"continuous": ContinuousBatchingScheduler}
