"""A second, real ``inferflux serve`` on loopback: the upstream ``openai_upstream`` forwards to
(and, in the end-to-end test, the gateway in front of it).

One process per test module that asks for :func:`upstream_server` (the default SmolLM2 model,
the dev admin key from ``INFERFLUX_API_KEY``); its ``/metrics`` tell whether a request still
holds a sequence there.
"""

from __future__ import annotations

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

from inferflux_core.auth.keys import generate_key
from tests.conftest import MODEL_NAME, free_port

_ACTIVE = re.compile(r"^inferflux_active_sequences\{[^}]*\} ([0-9.e+]+)$", re.MULTILINE)


@dataclass
class UpstreamServer:
    """A running ``inferflux serve`` process and how to reach it."""

    process: subprocess.Popen[bytes]
    base_url: str
    api_key: str
    log_path: Path

    @property
    def port(self) -> int:
        """The loopback port it listens on."""
        return int(self.base_url.rsplit(":", 1)[1])

    @property
    def api_url(self) -> str:
        """The OpenAI base URL (``.../v1``)."""
        return f"{self.base_url}/v1"

    def listed_models(self) -> set[str]:
        """The model ids ``/v1/models`` lists (none while the server does not answer)."""
        try:
            response = httpx.get(
                f"{self.api_url}/models",
                headers={"Authorization": f"Bearer {self.api_key}"},
                timeout=1,
            )
        except httpx.HTTPError:
            return set()
        if response.status_code != 200:
            return set()
        return {model["id"] for model in response.json().get("data", [])}

    def metrics_text(self) -> str:
        """Its ``/metrics`` exposition text."""
        response = httpx.get(
            f"{self.base_url}/metrics",
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=10,
        )
        response.raise_for_status()
        return response.text

    def active_sequences(self) -> float:
        """``inferflux_active_sequences``, summed over the upstream's models."""
        return sum(float(value) for value in _ACTIVE.findall(self.metrics_text()))

    def wait_for_active_sequences(self, predicate: object, timeout: float) -> float:
        """Poll ``/metrics`` until ``predicate(active)`` holds; the last value seen."""
        deadline = time.monotonic() + timeout
        while True:
            active = self.active_sequences()
            if predicate(active) or time.monotonic() > deadline:  # type: ignore[operator]
                return active
            time.sleep(0.05)


def start_upstream(directory: Path) -> UpstreamServer:
    """Start ``inferflux serve`` with the default model on a free loopback port; wait for it."""
    return start_serve(
        directory, [{"name": MODEL_NAME, "context_length": 2048, "max_sequences": 4}]
    )


def start_serve(
    directory: Path,
    models: list[dict[str, Any]],
    env: dict[str, str] | None = None,
    *,
    port: int | None = None,
    api_key: str | None = None,
    config: dict[str, Any] | None = None,
    log_level: str = "warning",
) -> UpstreamServer:
    """Start ``inferflux serve`` with ``models`` (``models:`` of its config) on loopback (a
    free port unless ``port`` is given), with ``env`` added to its environment, ``config``'s
    other sections (``guardrails``, ``audit``, ...) and ``api_key`` as its dev admin key (a
    new one by default); return once ``/v1/models`` lists every model."""
    port = free_port() if port is None else port
    server_section = {"port": port, "log_level": log_level}
    settings = {**(config or {}), "server": server_section, "models": models}
    config_path = directory / "inferflux.json"
    config_path.write_text(json.dumps(settings))  # JSON is YAML
    api_key = api_key or generate_key()[0]
    log_path = directory / "inferflux.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "inferflux_core.cli.main", "serve", "-c", str(config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {}), "INFERFLUX_API_KEY": api_key},
        )
    server = UpstreamServer(process, f"http://127.0.0.1:{port}", api_key, log_path)
    wanted = {model["name"] for model in models}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log_tail = log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"inferflux serve exited with {process.returncode}: {log_tail}")
        if wanted <= server.listed_models():
            return server
        time.sleep(0.2)
    stop_upstream(server)
    raise RuntimeError(f"inferflux serve did not list {sorted(wanted)}: {log_path}")


def stop_upstream(server: UpstreamServer) -> None:
    """Terminate the process (kill it if it does not stop)."""
    if server.process.poll() is not None:
        return
    server.process.terminate()
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(timeout=10)


@pytest.fixture(scope="module")
def upstream_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpstreamServer]:
    """A second ``inferflux serve`` for the module."""
    server = start_upstream(tmp_path_factory.mktemp("upstream"))
    try:
        yield server
    finally:
        stop_upstream(server)


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of ``name`` with exactly ``labels`` in a Prometheus exposition text."""
    wanted = sorted(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        sample, _, value = line.rpartition(" ")
        name_part, _, rest = sample.partition("{")
        if name_part == name and sorted(filter(None, rest.rstrip("}").split(","))) == wanted:
            return float(value)
    return None


def free_loopback_url() -> str:
    """An OpenAI base URL on loopback where nothing listens."""
    return f"http://127.0.0.1:{free_port()}/v1"
