"""What request-level backends bring to ``/metrics``: their own collectors (vLLM's ``vllm:*``)
and the numbers they report of themselves (``RequestBackend.metrics()``)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

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
                number = number_of(value)
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


def number_of(value: object) -> float | None:
    """``value`` as a float if it is a real int or float (not a bool); None otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return float(value)
    except OverflowError:  # an int past float's range
        return None
