"""The chart's pod, run here as a kubelet would run it: the rendered ConfigMap, Secret and
volumes laid out in a temporary directory, the init container's command, then the server's,
exactly as rendered (only the mount paths moved, and the port and host overridden through the
environment, which wins over the config file as in the image). Then the API key from the
policy the Secret carried opens the API, the Dockerfile's HEALTHCHECK command passes, and the
vLLM-on-Ray example's gateway pod forwards to that pod with the key from its Secret."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from dockerfile_parse import DockerfileParser
from openai import AuthenticationError, OpenAI

from tests.conftest import free_port
from tests.helm_chart import pod_spec, render, values_from

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@dataclass
class Pod:
    """The chart's pod laid out under one directory."""

    root: Path
    mounts: dict[str, Path]
    env: dict[str, str]

    def local(self, text: str) -> str:
        """``text`` with every mount path replaced by its directory here (in one pass, so a
        directory under /tmp is not replaced again)."""
        paths = sorted(self.mounts, key=len, reverse=True)
        pattern = r"(?<![\w/.-])(" + "|".join(re.escape(p) for p in paths) + r")(?![\w.-])"
        return re.sub(pattern, lambda m: str(self.mounts[m.group(1)]), text)

    def argv(self, container: dict[str, Any]) -> list[str]:
        """The container's command and arguments, run from this venv (whose own path is
        never remapped: a checkout under /tmp is not the pod's /tmp)."""
        arguments = [*container["command"][1:], *container["args"]]
        return [str(BIN / container["command"][0]), *(self.local(arg) for arg in arguments)]


def _make_policy(directory: Path) -> tuple[str, str]:
    """A policy with one user key, made as docs/deployment.md says: (key, policy JSON)."""
    env = os.environ | {
        "INFERFLUX_POLICY__STORE": "encrypted_file",
        "INFERFLUX_POLICY__OPTIONS__PATH": str(directory / "policy.bin"),
        "INFERFLUX_POLICY_PASSPHRASE": "a local passphrase",
    }
    inferflux = str(BIN / "inferflux")
    created = subprocess.run(
        [inferflux, "admin", "keys", "create", "--name", "app", "--role", "user"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    shown = subprocess.run(
        [inferflux, "admin", "policy", "show"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(created.stdout)["key"], shown.stdout


def _lay_out(rendered: Any, root: Path) -> Pod:
    """Write the pod's volumes under ``root`` and resolve its environment."""
    spec = pod_spec(rendered)
    secret = {k: base64.b64decode(v).decode() for k, v in rendered.get("Secret")["data"].items()}
    mounts: dict[str, Path] = {}
    volumes = {v["name"]: v for v in spec["volumes"]}
    for container in spec["containers"] + spec["initContainers"]:
        for mount in container["volumeMounts"]:
            local = root / mount["name"]
            volume = volumes[mount["name"]]
            if "configMap" in volume:
                local = root / "config" / mount["subPath"]
                local.parent.mkdir(exist_ok=True)
                local.write_text(rendered.get("ConfigMap")["data"][mount["subPath"]])
            else:
                local.mkdir(exist_ok=True)
                for item in volume.get("secret", {}).get("items", []):
                    (local / item["path"]).write_text(secret[item["key"]])
            mounts[mount["mountPath"]] = local
    env = dict(os.environ)
    for variable in spec["containers"][0]["env"]:
        ref = variable["valueFrom"]["secretKeyRef"]
        env[variable["name"]] = secret[ref["key"]]
    pod = Pod(root, mounts, env)
    config = mounts["/etc/inferflux/config.yaml"]
    config.write_text(pod.local(config.read_text()))
    return pod


@dataclass
class Served:
    """A server the chart's pod runs, and the key that opens it."""

    base_url: str
    port: int
    api_key: str


@contextlib.contextmanager
def run_pod(values: dict[str, Any], root: Path, api_key: str) -> Iterator[Served]:
    """Render the chart with ``values``, run its init container, then serve its server until
    the block ends."""
    rendered = render(values)
    pod = _lay_out(rendered, root)
    spec = pod_spec(rendered)
    port = free_port()
    env = pod.env | {"INFERFLUX_SERVER__HOST": "127.0.0.1", "INFERFLUX_SERVER__PORT": str(port)}
    (init,) = spec["initContainers"]
    subprocess.run(pod.argv(init), env=env, check=True, capture_output=True, timeout=60)
    log_path = root / "server.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            pod.argv(spec["containers"][0]), env=env, stdout=log, stderr=subprocess.STDOUT
        )
        base_url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 90
            while not _answers(f"{base_url}/livez"):
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the pod's server did not start:\n{log_path.read_text()}")
                time.sleep(0.2)
            yield Served(base_url, port, api_key)
        finally:
            process.terminate()
            process.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """(an API key, the policy JSON holding its hash)."""
    return _make_policy(tmp_path_factory.mktemp("policy-source"))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, policy: tuple[str, str]) -> Iterator[Served]:
    """The pod of the chart's default values, with a policy and a passphrase in its Secret."""
    api_key, document = policy
    with run_pod({"secrets": {"policy": document}}, tmp_path_factory.mktemp("pod"), api_key) as pod:
        yield pod


def test_the_vllm_on_ray_example_forwards_to_its_upstream_with_the_secrets_key(
    served: Served, policy: tuple[str, str], tmp_path: Path
) -> None:
    # values-vllm-ray.yaml with its upstream moved from the RayService to the default pod
    # (an OpenAI-compatible server whose key the Secret carries), and that pod's model name.
    values = values_from("values-vllm-ray.yaml")
    (model,) = values["config"]["models"]
    model["source"] = "smollm2-135m-instruct"
    model["options"]["base_url"] = f"{served.base_url}/v1"
    values["secrets"] |= {"policy": policy[1], "extraEnv": {"VLLM_API_KEY": served.api_key}}
    with run_pod(values, tmp_path, policy[0]) as gateway:
        deadline = time.monotonic() + 30
        while not _answers(f"{gateway.base_url}/readyz"):
            assert time.monotonic() < deadline, "the gateway never found its upstream healthy"
            time.sleep(0.5)
        client = OpenAI(base_url=f"{gateway.base_url}/v1", api_key=gateway.api_key)
        reply = client.chat.completions.create(
            model=model["name"], messages=[{"role": "user", "content": "Say hello."}], max_tokens=4
        )
        assert reply.model == model["name"]
        assert reply.usage is not None and reply.usage.completion_tokens > 0


def test_the_pod_is_ready_and_the_policys_key_opens_the_api(served: Served) -> None:
    assert httpx.get(f"{served.base_url}/readyz", timeout=5).status_code == 200
    client = OpenAI(base_url=f"{served.base_url}/v1", api_key=served.api_key)
    reply = client.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=4,
    )
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    with pytest.raises(AuthenticationError):
        OpenAI(base_url=f"{served.base_url}/v1", api_key="ifx-0.x").models.list()


def test_prometheus_scrapes_without_a_key(served: Served) -> None:
    response = httpx.get(f"{served.base_url}/metrics", timeout=5)
    assert response.status_code == 200
    assert "inferflux_" in response.text


def _healthcheck_argv() -> list[str]:
    parser = DockerfileParser(str(ROOT / "Dockerfile"))
    (value,) = [i["value"] for i in parser.structure if i["instruction"] == "HEALTHCHECK"]
    argv: list[str] = json.loads(value.partition(" CMD ")[2])
    return [sys.executable, *argv[1:]]


def test_the_images_healthcheck_passes_on_the_server_and_fails_without_one(
    served: Served,
) -> None:
    argv = _healthcheck_argv()
    env = os.environ | {"INFERFLUX_SERVER__PORT": str(served.port)}
    assert subprocess.run(argv, env=env, capture_output=True, timeout=30).returncode == 0
    env["INFERFLUX_SERVER__PORT"] = str(free_port())
    assert subprocess.run(argv, env=env, capture_output=True, timeout=30).returncode != 0
