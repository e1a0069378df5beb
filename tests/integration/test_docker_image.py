"""The Docker image, built and run: opt-in (INFERFLUX_DOCKER_TESTS=1), because the build
compiles llama.cpp (about ten minutes on two cores), and only where a Docker daemon answers."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
TAG = "inferflux:test"


def _docker_available() -> str | None:
    """Why the image cannot be tested here, or None."""
    if os.environ.get("INFERFLUX_DOCKER_TESTS") != "1":
        return "set INFERFLUX_DOCKER_TESTS=1 to build and run the Docker image"
    if shutil.which("docker") is None:
        return "no docker command"
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    if info.returncode != 0:
        lines = info.stderr.strip().splitlines()
        return "no Docker daemon" + (f": {lines[-1]}" if lines else "")
    return None


_WHY_NOT = _docker_available()
pytestmark = [pytest.mark.docker, pytest.mark.skipif(bool(_WHY_NOT), reason=_WHY_NOT or "")]


@pytest.fixture(scope="module")
def image() -> str:
    """The image built from the repository's Dockerfile."""
    subprocess.run(["docker", "build", "-t", TAG, str(ROOT)], check=True, timeout=3600)
    return TAG


@pytest.fixture(scope="module")
def container(image: str) -> Iterator[tuple[str, str]]:
    """The image running with auth disabled, published on a loopback port: (id, base URL)."""
    port = free_port()
    name = f"inferflux-test-{uuid.uuid4().hex[:8]}"
    publish = ["-p", f"127.0.0.1:{port}:8000", "-e", "INFERFLUX_AUTH__MODE=disabled"]
    subprocess.run(
        ["docker", "run", "-d", "--name", name, *publish, image],
        check=True,
        capture_output=True,
        timeout=60,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base_url}/livez", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True)
                pytest.fail(f"the container did not start:\n{logs.stdout}{logs.stderr}")
            time.sleep(1)
        yield name, base_url
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)


@pytest.mark.timeout(3900)
def test_the_image_serves_the_baked_in_model(container: tuple[str, str]) -> None:
    _, base_url = container
    assert httpx.get(f"{base_url}/readyz", timeout=5).status_code == 200
    client = OpenAI(base_url=f"{base_url}/v1", api_key="unused")
    reply = client.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=8,
    )
    assert reply.choices[0].message.content
    assert reply.usage is not None and reply.usage.completion_tokens > 0


@pytest.mark.timeout(3900)
def test_the_container_runs_unprivileged_and_turns_healthy(container: tuple[str, str]) -> None:
    name, _ = container
    uid = subprocess.run(["docker", "exec", name, "id", "-u"], capture_output=True, text=True)
    assert uid.stdout.strip() == "10001"
    deadline = time.monotonic() + 90
    status = ""
    while time.monotonic() < deadline:
        status = subprocess.run(
            ["docker", "inspect", "--format", "{{.State.Health.Status}}", name],
            capture_output=True,
            text=True,
        ).stdout.strip()
        if status == "healthy":
            return
        time.sleep(2)
    pytest.fail(f"HEALTHCHECK status is {status!r}")
