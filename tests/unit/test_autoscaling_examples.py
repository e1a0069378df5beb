"""The autoscaling examples (``deploy/examples/keda-*.yaml``, ``hpa-*.yaml``) are YAML of the
kinds they claim, and every inferflux metric they name is one the server exports."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from inferflux_core.metrics import EngineMetrics

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"
FILES = sorted([*EXAMPLES.glob("keda-*.yaml"), *EXAMPLES.glob("hpa-*.yaml")])
METRIC_NAME = re.compile(r"\binferflux_[a-z0-9_]+")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}


def exported_names() -> set[str]:
    """Every sample name a server's registry exports, series or not yet."""
    metrics = EngineMetrics()
    metrics.series("a-model")  # the families with children, as once a model is loaded
    names: set[str] = set()
    for family in metrics.registry.collect():
        names.add(family.name)
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ()))
        names.update(sample.name for sample in family.samples)
    return names


def strings(node: Any) -> Iterator[str]:
    """Every string in a YAML document, keys included."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from strings(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


def documents(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def test_there_are_keda_and_hpa_examples() -> None:
    names = {p.name for p in FILES}
    assert any(n.startswith("keda-") for n in names) and any(n.startswith("hpa-") for n in names)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_metric_an_example_names_is_exported(path: Path) -> None:
    exported = exported_names()
    named = {m for doc in documents(path) for s in strings(doc) for m in METRIC_NAME.findall(s)}
    assert named, f"{path.name} names no inferflux metric"
    assert named <= exported, sorted(named - exported)
    # the autoscaler signals the docs promise
    assert {"inferflux_num_requests_waiting", "inferflux_kv_cache_usage_perc"} <= named


def test_the_keda_example_is_a_scaled_object_with_prometheus_triggers() -> None:
    (scaled,) = documents(EXAMPLES / "keda-scaledobject.yaml")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1" and scaled["kind"] == "ScaledObject"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] and spec["minReplicaCount"] <= spec["maxReplicaCount"]
    for trigger in spec["triggers"]:
        assert trigger["type"] == "prometheus"
        metadata = trigger["metadata"]
        assert metadata["serverAddress"].startswith("http")
        float(metadata["threshold"])  # KEDA takes a number as a string
        assert trigger.get("metricType", "AverageValue") in {"AverageValue", "Value"}


def test_the_hpa_example_reads_pod_metrics_the_adapter_serves() -> None:
    (hpa,) = documents(EXAMPLES / "hpa-custom-metrics.yaml")
    assert hpa["apiVersion"] == "autoscaling/v2" and hpa["kind"] == "HorizontalPodAutoscaler"
    spec = hpa["spec"]
    assert spec["minReplicas"] <= spec["maxReplicas"]
    wanted = {m["pods"]["metric"]["name"] for m in spec["metrics"] if m["type"] == "Pods"}
    (values,) = documents(EXAMPLES / "hpa-prometheus-adapter-values.yaml")
    served = {rule["name"]["as"] for rule in values["rules"]["custom"]}
    assert wanted and wanted <= served
    for rule in values["rules"]["custom"]:
        assert "<<.Series>>" in rule["metricsQuery"] and "pod" in rule["resources"]["overrides"]
