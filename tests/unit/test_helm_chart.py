"""The Helm chart, rendered by Helm's engine for every values file it ships, checked against
the Kubernetes API schemas, against inferflux's own configuration model, and for the
references between its objects that no schema checks (selectors, ports, volumes, secrets)."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from inferflux_core.cli.config_view import effective_config
from inferflux_core.config import load_config
from inferflux_core.plugins import PluginHost
from tests.helm_chart import (
    CHART,
    NAMESPACE,
    VALUES_FILES,
    Rendered,
    pod_spec,
    render,
    server_config,
    values_from,
)

#: The oldest Kubernetes the chart supports (Chart.yaml's kubeVersion) and the newest whose
#: schemas kubernetes-validate bundles.
KUBERNETES_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())

#: Custom resources, whose schemas come with their operator's CRDs, not with Kubernetes.
CUSTOM_RESOURCES = {"ServiceMonitor": "monitoring.coreos.com/v1"}

#: The user the Dockerfile's final stage runs as.
IMAGE_UID = 10001


@pytest.fixture(scope="module", params=VALUES_FILES)
def rendered(request: pytest.FixtureRequest) -> Rendered:
    """The chart rendered with one of its values files."""
    return render(values_from(request.param))


def test_the_chart_ships_a_gpu_and_a_vllm_on_ray_example() -> None:
    assert {"values.yaml", "values-gpu.yaml", "values-vllm-ray.yaml"} <= set(VALUES_FILES)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_validates_against_the_kubernetes_schemas(
    rendered: Rendered, version: str
) -> None:
    for obj in rendered:
        kind = obj["kind"]
        if kind in CUSTOM_RESOURCES:
            assert obj["apiVersion"] == CUSTOM_RESOURCES[kind]
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = "/".join(str(p) for p in exc.absolute_path)
            pytest.fail(f"{kind} {obj['metadata']['name']} at {where}: {exc.message}")


def test_the_chart_lints_without_warnings() -> None:
    for name in VALUES_FILES:
        report = helm.lint(CHART, values_from(name), strict=True, namespace=NAMESPACE)
        problems = [m for m in report["messages"] if m["severity"] >= 2]
        assert not report["errors"] and not problems, (name, report)


def test_the_configmap_holds_a_valid_inferflux_config(rendered: Rendered, tmp_path: Path) -> None:
    config_file = tmp_path / "config.yaml"
    config_file.write_text(rendered.get("ConfigMap")["data"]["config.yaml"], encoding="utf-8")
    settings = load_config(config_file)
    # Each plugin's options checked against its options model, as a model load checks them.
    effective_config(settings, PluginHost(autoload=True))
    container = pod_spec(rendered)["containers"][0]
    assert settings.server.host == "0.0.0.0"
    assert settings.server.port == container["ports"][0]["containerPort"]


def test_the_service_and_probes_reach_the_server_port(rendered: Rendered) -> None:
    deployment = rendered.get("Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    service = rendered.get("Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    container = pod_spec(rendered)["containers"][0]
    port_names = {p["name"] for p in container["ports"]}
    assert service["spec"]["ports"][0]["targetPort"] in port_names
    probes = {name: container[f"{name}Probe"]["httpGet"] for name in ("liveness", "readiness")}
    probes["startup"] = container["startupProbe"]["httpGet"]
    assert {name: probe["path"] for name, probe in probes.items()} == {
        "liveness": "/livez",
        "readiness": "/readyz",
        "startup": "/livez",
    }
    assert all(probe["port"] in port_names for probe in probes.values())


def test_the_pods_can_be_scraped(rendered: Rendered) -> None:
    template = rendered.get("Deployment")["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    container = template["spec"]["containers"][0]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == container["ports"][0]["containerPort"]
    # Annotation-driven scraping sends no credential: the config must let it in.
    assert server_config(rendered)["auth"]["public_metrics"] is True


def test_every_mount_has_its_volume_and_every_secret_reference_its_key(
    rendered: Rendered,
) -> None:
    spec = pod_spec(rendered)
    volumes = {v["name"]: v for v in spec["volumes"]}
    secret = rendered.objects.get(("Secret", rendered.get("Deployment")["metadata"]["name"]))
    for container in spec["containers"] + spec.get("initContainers", []):
        for mount in container["volumeMounts"]:
            assert mount["name"] in volumes, (container["name"], mount)
        for variable in container.get("env", []):
            ref = variable.get("valueFrom", {}).get("secretKeyRef")
            if ref and secret is not None and ref["name"] == secret["metadata"]["name"]:
                assert ref["key"] in secret["data"], variable["name"]
    assert volumes["config"]["configMap"]["name"] == rendered.get("ConfigMap")["metadata"]["name"]
    assert spec["serviceAccountName"] == rendered.get("ServiceAccount")["metadata"]["name"]


def test_the_pod_runs_as_the_image_user_on_a_read_only_root(rendered: Rendered) -> None:
    spec = pod_spec(rendered)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == IMAGE_UID
    container = spec["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/tmp", "/home/inferflux"} <= mounts
    policy = server_config(rendered).get("policy", {})
    if policy.get("store") == "encrypted_file":
        assert str(Path(policy["options"]["path"]).parent) in mounts


def test_the_default_values_make_a_passphrase_and_warn_that_no_key_exists() -> None:
    rendered = render()
    secret = rendered.get("Secret")
    passphrase = base64.b64decode(secret["data"]["policy-passphrase"]).decode()
    assert len(passphrase) == 32
    assert "policy.json" not in secret["data"]
    assert "initContainers" not in pod_spec(rendered)
    assert "nobody could call this server" in rendered.notes


def test_a_policy_in_the_values_is_imported_before_the_server_starts() -> None:
    policy = '{"version": 1, "keys": {}}'
    rendered = render({"secrets": {"policy": policy, "passphrase": "correct horse"}})
    secret = rendered.get("Secret")
    assert base64.b64decode(secret["data"]["policy.json"]).decode() == policy
    assert base64.b64decode(secret["data"]["policy-passphrase"]).decode() == "correct horse"
    spec = pod_spec(rendered)
    (init,) = spec["initContainers"]
    assert init["args"][-3:] == ["policy", "import", "/etc/inferflux/policy-source/policy.json"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["policy-source"]["secret"]["items"] == [
        {"key": "policy.json", "path": "policy.json"}
    ]
    assert "WARNING" not in rendered.notes


def test_an_existing_secret_and_claim_replace_the_charts_own() -> None:
    rendered = render(
        {"secrets": {"existingSecret": "my-creds"}, "policyVolume": {"existingClaim": "policy"}}
    )
    assert "Secret" not in rendered.kinds()
    spec = pod_spec(rendered)
    refs = {
        v["valueFrom"]["secretKeyRef"]["name"]
        for c in spec["containers"] + spec["initContainers"]
        for v in c["env"]
        if "valueFrom" in v
    }
    assert refs == {"my-creds"}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["policy"]["persistentVolumeClaim"] == {"claimName": "policy"}
    assert volumes["policy-source"]["secret"]["secretName"] == "my-creds"


def test_auth_disabled_needs_no_secret_volume_nor_passphrase() -> None:
    rendered = render({"config": {"auth": {"mode": "disabled"}, "policy": {"store": "memory"}}})
    spec = pod_spec(rendered)
    assert "policy" not in {v["name"] for v in spec["volumes"]}
    assert not spec["containers"][0].get("env")
    assert "anyone who reaches the Service" in rendered.notes


def test_the_autoscaler_scales_the_deployment_on_waiting_requests() -> None:
    rendered = render({"autoscaling": {"enabled": True, "targetCPUUtilizationPercentage": 80}})
    hpa = rendered.get("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    deployment = rendered.get("Deployment")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    pods, cpu = hpa["spec"]["metrics"]
    assert pods["pods"]["metric"]["name"] == "inferflux_num_requests_waiting"
    assert pods["pods"]["target"] == {"type": "AverageValue", "averageValue": "2"}
    assert cpu["resource"]["target"]["averageUtilization"] == 80
    # The autoscaler owns the replica count.
    assert "replicas" not in deployment["spec"]
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(hpa, version, strict=True)


def test_the_service_monitor_selects_the_service_port() -> None:
    rendered = render(
        {"serviceMonitor": {"enabled": True, "bearerTokenSecret": {"name": "prom", "key": "t"}}}
    )
    monitor = rendered.get("ServiceMonitor")
    service = rendered.get("Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= (
        service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    assert endpoint["authorization"] == {
        "type": "Bearer",
        "credentials": {"name": "prom", "key": "t"},
    }


def test_the_gpu_example_asks_for_a_gpu_node() -> None:
    rendered = render(values_from("values-gpu.yaml"))
    spec = pod_spec(rendered)
    assert spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert spec["containers"][0]["image"].endswith("-cuda")
    assert any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])
    assert {v["name"] for v in spec["volumes"]} >= {"models", "shm"}
    (model,) = server_config(rendered)["models"]
    assert model["backend"] == "vllm"


def test_the_vllm_on_ray_example_fronts_the_ray_serve_service() -> None:
    rendered = render(values_from("values-vllm-ray.yaml"))
    (model,) = server_config(rendered)["models"]
    assert model["backend"] == "openai_upstream"
    assert model["options"]["base_url"].startswith("http://llama-70b-serve-svc.")
    env = {v["name"]: v for v in pod_spec(rendered)["containers"][0]["env"]}
    key_ref = env[model["options"]["api_key_env"]]["valueFrom"]["secretKeyRef"]
    assert key_ref["key"] in rendered.get("Secret")["data"]


def test_a_broken_template_fails_the_render(tmp_path: Path) -> None:
    chart = tmp_path / "inferflux"
    shutil.copytree(CHART, chart)
    service = chart / "templates" / "service.yaml"
    service.write_text(service.read_text() + "\n{{ .Values.service.port | nosuchfunction }}\n")
    with pytest.raises(helm.HelmError):
        render(chart=chart)


def _documents(path: Path) -> list[Any]:
    return list(yaml.safe_load_all(path.read_text(encoding="utf-8")))


def test_every_values_file_is_yaml_and_a_mapping() -> None:
    for name in VALUES_FILES:
        (document,) = _documents(CHART / name)
        assert isinstance(document, dict), name


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"autoscalling": {"enabled": True}}, "autoscalling"),
        ({"secrets": {"pasphrase": "x"}}, "pasphrase"),
        ({"containerPort": "8000"}, "/containerPort"),
        ({"config": {"models": []}}, "/config/models"),
    ],
)
def test_a_misspelt_or_mistyped_value_is_refused(values: dict[str, Any], where: str) -> None:
    with pytest.raises(helm.HelmError, match=where):
        render(values)
