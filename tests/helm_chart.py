"""The Helm chart in deploy/helm/inferflux, rendered by Helm's own engine (the Go SDK, through
the helm-python-sdk wheel) into Kubernetes objects the tests can inspect."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

CHART = Path(__file__).resolve().parent.parent / "deploy" / "helm" / "inferflux"
RELEASE = "llm"
NAMESPACE = "inference"

#: Every values file shipped with the chart: values.yaml alone, and each example over it.
VALUES_FILES = sorted(p.name for p in CHART.glob("values*.yaml"))


def values_from(name: str) -> dict[str, Any]:
    """The values of one of the chart's values files (``{}`` for values.yaml, the defaults)."""
    if name == "values.yaml":
        return {}
    loaded = yaml.safe_load((CHART / name).read_text(encoding="utf-8"))
    assert isinstance(loaded, dict), f"{name} does not hold a mapping"
    return loaded


@dataclass(frozen=True)
class Rendered:
    """One rendering of the chart: its objects by (kind, name) and its NOTES.txt."""

    objects: dict[tuple[str, str], dict[str, Any]]
    notes: str

    def get(self, kind: str) -> dict[str, Any]:
        """The one object of ``kind`` (fails if there is not exactly one)."""
        found = [obj for (k, _), obj in self.objects.items() if k == kind]
        assert len(found) == 1, f"expected one {kind}, rendered {len(found)}"
        return found[0]

    def kinds(self) -> set[str]:
        """The kinds rendered."""
        return {kind for kind, _ in self.objects}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.objects.values())


def render(values: Mapping[str, Any] | None = None, *, chart: Path = CHART) -> Rendered:
    """``helm template`` of ``chart`` with ``values`` over its defaults, as an install."""
    with helm.Chart.load(chart) as loaded:
        manifests = loaded.render(
            dict(values or {}), name=RELEASE, namespace=NAMESPACE, is_install=True
        )
    objects: dict[tuple[str, str], dict[str, Any]] = {}
    notes = ""
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        for document in yaml.safe_load_all(text):
            if document is None:
                continue
            key = (document["kind"], document["metadata"]["name"])
            assert key not in objects, f"{path} renders {key} twice"
            objects[key] = document
    return Rendered(objects, notes)


def pod_spec(rendered: Rendered) -> dict[str, Any]:
    """The Deployment's pod spec."""
    spec: dict[str, Any] = rendered.get("Deployment")["spec"]["template"]["spec"]
    return spec


def server_config(rendered: Rendered) -> dict[str, Any]:
    """The inferflux configuration file the ConfigMap holds."""
    config = yaml.safe_load(rendered.get("ConfigMap")["data"]["config.yaml"])
    assert isinstance(config, dict)
    return config
