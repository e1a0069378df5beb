"""vLLM's metrics on inferflux's ``/metrics``.

:class:`SchedulerGauges` is a vLLM stat logger that keeps the latest scheduler stats (requests
running and waiting, KV cache usage, prefix cache hits, preemptions) for
:meth:`~inferflux_core.contracts.RequestBackend.metrics`. :data:`VLLM_COLLECTOR` re-exports
the ``vllm:*`` families vLLM registers in prometheus_client's global registry (its own
Prometheus stat logger, on while stats are logged), so they appear on the engine's own
registry unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.registry import Collector

#: The prefix of the metric families vLLM registers.
VLLM_PREFIX = "vllm:"


class VllmRegistryCollector(Collector):
    """The ``vllm:*`` families of prometheus_client's global registry, read at each scrape."""

    def collect(self) -> Iterator[Any]:
        """vLLM's families as they are now."""
        for family in REGISTRY.collect():
            if family.name.startswith(VLLM_PREFIX):
                yield family

    def describe(self) -> Iterator[Any]:
        """Nothing ahead of time: vLLM registers its metrics when an engine starts."""
        return iter(())


#: One collector for every vLLM engine of the process (they share the global registry).
VLLM_COLLECTOR = VllmRegistryCollector()


class SchedulerSnapshot:
    """The latest numbers vLLM's scheduler reported."""

    def __init__(self) -> None:
        self.running = 0
        self.waiting = 0
        self.kv_cache_usage = 0.0
        self.prefix_queries = 0
        self.prefix_hits = 0
        self.preemptions = 0


def scheduler_logger_factory(snapshot: SchedulerSnapshot) -> Callable[..., Any]:
    """A vLLM ``StatLoggerFactory`` whose loggers write into ``snapshot``."""
    from vllm.v1.metrics.loggers import StatLoggerBase

    class SchedulerGauges(StatLoggerBase):
        """Keeps the latest scheduler stats of one engine."""

        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            self.engine_index = engine_index

        def record(
            self,
            scheduler_stats: Any,
            iteration_stats: Any,
            mm_cache_stats: Any = None,
            engine_idx: int = 0,
        ) -> None:
            if iteration_stats is not None:
                snapshot.preemptions += int(getattr(iteration_stats, "num_preempted_reqs", 0))
            if scheduler_stats is None:
                return
            snapshot.running = int(scheduler_stats.num_running_reqs)
            snapshot.waiting = int(scheduler_stats.num_waiting_reqs)
            snapshot.kv_cache_usage = float(scheduler_stats.kv_cache_usage)
            prefix = getattr(scheduler_stats, "prefix_cache_stats", None)
            if prefix is not None:
                snapshot.prefix_queries += int(getattr(prefix, "queries", 0))
                snapshot.prefix_hits += int(getattr(prefix, "hits", 0))

        def log_engine_initialized(self) -> None:
            return None

    return SchedulerGauges
