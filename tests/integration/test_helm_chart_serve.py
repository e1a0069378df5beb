"""The chart's pod, run here as a kubelet would run it: the rendered ConfigMap, Secret and
volumes laid out in a temporary directory, the init container's command, then the server's,
exactly as rendered (only the mount paths moved, and the port and host overridden through the
environment, which wins over the config file as in the image). Then the API key from the
policy the Secret carried opens the API, and the Dockerfile's HEALTHCHECK command passes."""

from __future__ import annotations

import base64
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
from tests.helm_chart import pod_spec, render

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
        """The container's command and arguments, run from this venv."""
        command = [str(BIN / container["command"][0]), *container["command"][1:]]
        return [self.local(arg) for arg in command + container["args"]]


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
    """The server the chart's pod runs, and the key that opens it."""

    base_url: str
    port: int
    api_key: str


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The pod of the chart's default values, with a policy and a passphrase in its Secret."""
    root = tmp_path_factory.mktemp("pod")
    api_key, policy = _make_policy(tmp_path_factory.mktemp("policy-source"))
    rendered = render({"secrets": {"policy": policy}})
    pod = _lay_out(rendered, root)
    spec = pod_spec(rendered)
    port = free_port()
    env = pod.env | {"INFERFLUX_SERVER__HOST": "127.0.0.1", "INFERFLUX_SERVER__PORT": str(port)}
    (init,) = spec["initContainers"]
    subprocess.run(pod.argv(init), env=env, check=True, capture_output=True, timeout=60)
    log = (root / "server.log").open("w")
    process = subprocess.Popen(
        pod.argv(spec["containers"][0]), env=env, stdout=log, stderr=subprocess.STDOUT
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{base_url}/livez", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the pod's server did not start:\n{(root / 'server.log').read_text()}")
            time.sleep(0.2)
        yield Served(base_url, port, api_key)
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


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
