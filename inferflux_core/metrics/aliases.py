"""The metric names we exported before vLLM's, kept for one release as deprecated aliases.

Each alias is read from its replacement at scrape time (the same value, never counted twice),
under its old name and its old label ``model``. ``docs/api.md#metrics`` lists them with their
replacements.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client.core import Metric
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample


@dataclass(frozen=True, slots=True)
class Alias:
    """``old_name`` (a family name, without ``_total``) reads ``replacement``'s samples;
    ``labels`` renames labels (``model_name`` becomes ``model``; the others are dropped),
    ``values`` renames label values."""

    old_name: str
    replacement: MetricWrapperBase
    labels: Mapping[str, str] = field(default_factory=lambda: {"model_name": "model"})
    values: Mapping[str, str] = field(default_factory=dict)


class DeprecatedAliases(Collector):
    """Yields every alias's family at each scrape, from its replacement's current samples."""

    def __init__(self, aliases: tuple[Alias, ...]) -> None:
        self.aliases = aliases

    def collect(self) -> Iterator[Metric]:
        """One family per alias."""
        for alias in self.aliases:
            for source in alias.replacement.collect():
                yield _renamed(source, alias)

    def describe(self) -> Iterator[Metric]:
        """Nothing ahead of time: the names are checked against their replacements'."""
        return iter(())


def _renamed(source: Metric, alias: Alias) -> Metric:
    family = Metric(
        alias.old_name,
        f"DEPRECATED: use {source.name}. {source.documentation}",
        source.type,
    )
    for sample in source.samples:
        labels = {
            alias.labels[name]: alias.values.get(value, value)
            for name, value in sample.labels.items()
            if name in alias.labels
        }
        if "le" in sample.labels:
            labels["le"] = sample.labels["le"]
        suffix = sample.name[len(source.name) :]
        family.samples.append(
            Sample(alias.old_name + suffix, labels, sample.value, sample.timestamp)
        )
    return family
