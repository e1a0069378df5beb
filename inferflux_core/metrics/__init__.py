"""Prometheus metrics, one registry per engine.

- :mod:`~inferflux_core.metrics.families`: vLLM's serving metrics under our prefix, by
  ``model_name`` and ``engine``.
- :mod:`~inferflux_core.metrics.service`: ours (HTTP, refusals, model state and load time).
- :mod:`~inferflux_core.metrics.aliases`: the names before vLLM's, deprecated.
- :mod:`~inferflux_core.metrics.backends`: what request-level backends bring.

Process, platform and garbage collector metrics (prometheus_client's collectors) are on
the registry too.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from inferflux_core.metrics.aliases import Alias, DeprecatedAliases
from inferflux_core.metrics.backends import (
    BACKEND_PREFIX,
    MAX_BACKEND_METRICS,
    BackendCollectors,
    BackendMetricsCollector,
    BackendReports,
    ForwardedCollectors,
)
from inferflux_core.metrics.buckets import BATCH_BUCKETS
from inferflux_core.metrics.families import ModelSeries, ServingFamilies
from inferflux_core.metrics.service import MODEL_STATES, ServiceMetrics

__all__ = [
    "BACKEND_PREFIX",
    "BATCH_BUCKETS",
    "MAX_BACKEND_METRICS",
    "MODEL_STATES",
    "BackendMetricsCollector",
    "EngineMetrics",
    "ForwardedCollectors",
    "ModelSeries",
]

log = logging.getLogger(__name__)

#: Run before each scrape, to bring a model's numbers read on demand up to date.
ScrapeHook = Callable[[], None]


class EngineMetrics:
    """The engine's metrics; ``render()`` gives the Prometheus text format."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        #: vLLM's families (see :meth:`series` for one model's children).
        self.serving = ServingFamilies(r)
        #: HTTP, refusals, model state.
        self.service = ServiceMetrics(r)
        self._hooks: dict[str, ScrapeHook] = {}
        self.prefix_lookups = Counter(
            "inferflux_prefix_lookups",
            "DEPRECATED: use inferflux_prefix_cache_queries (tokens). "
            "Admissions that looked for a cached prefix",
            ["model"],
            registry=r,
        )
        self.prefix_hits = Counter(
            "inferflux_prefix_hits",
            "DEPRECATED: use inferflux_prefix_cache_hits (tokens). "
            "Admissions that reused a cached prefix",
            ["model"],
            registry=r,
        )
        self.embedding_requests = Counter(
            "inferflux_embedding_requests",
            "Embedding requests answered",
            ["model"],
            registry=r,
        )
        self.embedding_tokens = Counter(
            "inferflux_embedding_tokens", "Input tokens embedded", ["model"], registry=r
        )
        self.embedding_batch_inputs = Histogram(
            "inferflux_embedding_batch_inputs",
            "Inputs embedded together in one backend call",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        s = self.serving
        r.register(
            DeprecatedAliases(
                (
                    Alias(
                        "inferflux_requests",
                        s.request_success,
                        {"model_name": "model", "finished_reason": "finish_reason"},
                        {"abort": "cancelled"},
                    ),
                    Alias("inferflux_active_sequences", s.running),
                    Alias("inferflux_waiting_requests", s.waiting),
                    Alias("inferflux_preemptions", s.preemptions),
                    Alias("inferflux_prefix_reused_tokens", s.prefix_hits),
                    Alias("inferflux_step_sequences", s.batch_size),
                )
            )
        )
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)

    def series(self, model_name: str) -> ModelSeries:
        """The serving families' children for ``model_name``."""
        return ModelSeries(self.serving, model_name)

    def model_state(self, model_name: str, state: str) -> None:
        """Set ``model_name``'s ``inferflux_model_state`` (one of :data:`MODEL_STATES`)."""
        self.service.model_state(model_name, state)

    def model_loaded(self, model_name: str, seconds: float) -> None:
        """``model_name`` is ready, after ``seconds`` of loading."""
        self.service.load_seconds.labels(model_name).set(seconds)
        self.model_state(model_name, "ready")

    def on_scrape(self, model_name: str, hook: ScrapeHook) -> None:
        """Run ``hook`` before each scrape while ``model_name`` is served (it updates the
        numbers read on demand: KV usage, what a request-level backend reports)."""
        self._hooks[model_name] = hook

    def forget_model(self, model_name: str) -> None:
        """Drop every series and the scrape hook of ``model_name`` (it was unloaded)."""
        self._hooks.pop(model_name, None)
        self.serving.forget(model_name)
        self.service.forget(model_name)
        for by_model in (
            self.prefix_lookups,
            self.prefix_hits,
            self.embedding_requests,
            self.embedding_tokens,
            self.embedding_batch_inputs,
        ):
            with contextlib.suppress(KeyError):
                by_model.remove(model_name)

    def report_backends(self, reports: BackendReports) -> None:
        """Export what request-level backends report of themselves, read at each scrape."""
        self.registry.register(BackendMetricsCollector(reports))

    def forward_backend_collectors(self, collectors: BackendCollectors) -> None:
        """Export the metrics of the backends' own collectors, read at each scrape."""
        self.registry.register(ForwardedCollectors(collectors))

    def render(self) -> bytes:
        """The Prometheus exposition text (after every scrape hook has run)."""
        for name, hook in list(self._hooks.items()):
            try:
                hook()
            except Exception as exc:
                log.warning("model %s: updating its metrics failed: %s", name, exc)
        return generate_latest(self.registry)
