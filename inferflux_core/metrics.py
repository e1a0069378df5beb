"""Prometheus metrics, one registry per engine."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128)
#: Prefix of the gauges request-level backends report of themselves.
BACKEND_PREFIX = "inferflux_backend_"
#: The most metrics one backend may report (more are dropped at scrape).
MAX_BACKEND_METRICS = 256
_UNSAFE = re.compile(r"[^a-zA-Z0-9_]")

#: Gives, at scrape time, each request-level model's name and what its backend reports.
BackendReports = Callable[[], Iterable[tuple[str, Mapping[str, float]]]]
#: Gives, at scrape time, the Prometheus collectors request-level backends bring.
BackendCollectors = Callable[[], Iterable[Collector]]


class ForwardedCollectors(Collector):
    """Collects what the backends' own collectors hold (``RequestBackend.prometheus_collectors``),
    each distinct collector once, at every scrape."""

    def __init__(self, collectors: BackendCollectors) -> None:
        self._collectors = collectors

    def collect(self) -> Iterator[Metric]:
        """Every family of every distinct collector."""
        seen: set[int] = set()
        for collector in self._collectors():
            if id(collector) in seen:
                continue
            seen.add(id(collector))
            yield from collector.collect()

    def describe(self) -> Iterator[Metric]:
        """Nothing ahead of time: the backends register theirs when they start."""
        return iter(())


class BackendMetricsCollector(Collector):
    """Exports what request-level backends report (``RequestBackend.metrics()``) as gauges
    ``inferflux_backend_<name>{model=...}``, read at every scrape."""

    def __init__(self, reports: BackendReports) -> None:
        self._reports = reports

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """One gauge family per reported name, a sample per model."""
        families: dict[str, GaugeMetricFamily] = {}
        for model, values in self._reports():
            for name, value in list(values.items())[:MAX_BACKEND_METRICS]:
                number = _number(value)
                if number is None:
                    continue
                metric = BACKEND_PREFIX + _UNSAFE.sub("_", str(name))[:100]
                family = families.get(metric)
                if family is None:
                    family = GaugeMetricFamily(
                        metric, f"Reported by the backend as {name}", labels=["model"]
                    )
                    families[metric] = family
                family.add_metric([model], number)
        yield from families.values()

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """Nothing ahead of time: the names are the backends'."""
        return iter(())


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return float(value)
    except OverflowError:  # an int past float's range
        return None


class EngineMetrics:
    """The engine's counters; ``render()`` gives the Prometheus text format."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "inferflux_requests", "Finished requests", ["model", "finish_reason"], registry=r
        )
        self.prompt_tokens = Counter(
            "inferflux_prompt_tokens", "Prompt tokens prefilled", ["model"], registry=r
        )
        self.generation_tokens = Counter(
            "inferflux_generation_tokens", "Tokens generated", ["model"], registry=r
        )
        self.step_sequences = Histogram(
            "inferflux_step_sequences",
            "Sequences decoded together in one backend step",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.active_sequences = Gauge(
            "inferflux_active_sequences", "Sequences holding KV", ["model"], registry=r
        )
        self.waiting_requests = Gauge(
            "inferflux_waiting_requests", "Requests queued for admission", ["model"], registry=r
        )
        self.time_to_first_token = Histogram(
            "inferflux_time_to_first_token_seconds",
            "From submission to the first generated token",
            ["model"],
            registry=r,
        )

        self.prefix_lookups = Counter(
            "inferflux_prefix_lookups",
            "Admissions that looked for a cached prefix",
            ["model"],
            registry=r,
        )
        self.prefix_hits = Counter(
            "inferflux_prefix_hits",
            "Admissions that reused a cached prefix",
            ["model"],
            registry=r,
        )
        self.prefix_reused_tokens = Counter(
            "inferflux_prefix_reused_tokens",
            "Prompt tokens taken from cached KV",
            ["model"],
            registry=r,
        )
        self.preemptions = Counter(
            "inferflux_preemptions",
            "Running sequences preempted and saved",
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

    def report_backends(self, reports: BackendReports) -> None:
        """Export what request-level backends report of themselves, read at each scrape."""
        self.registry.register(BackendMetricsCollector(reports))

    def forward_backend_collectors(self, collectors: BackendCollectors) -> None:
        """Export the metrics of the backends' own collectors, read at each scrape."""
        self.registry.register(ForwardedCollectors(collectors))

    def render(self) -> bytes:
        """The Prometheus exposition text."""
        return generate_latest(self.registry)
