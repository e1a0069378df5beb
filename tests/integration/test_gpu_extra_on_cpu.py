"""``pip install inferflux[cuda]`` on a machine without CUDA never half-works: ``inferflux
serve`` serves the default model on the CPU with llama.cpp and says so once at startup, and
``inferflux plugins --check`` reports the same.

A real multi-GB install of the extra is not done here: the extra's distributions that this
venv lacks (vLLM's CUDA build, nvidia-ml-py, gguf) are stood in for by test-double
``*.dist-info`` folders (metadata only, no code) on the server's ``PYTHONPATH``; everything
else (the server, llama.cpp, device detection) is real.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import httpx
import pytest

from inferflux_core.extras import extra_requirements
from inferflux_plugins.devices.cuda import CudaContext
from tests.upstream_server import UpstreamServer, start_serve, stop_upstream

WARNING = "inferflux[cuda] is installed but no CUDA device was found; serving on CPU with llama.cpp"
#: Distributions the ``cuda`` extra adds here, as the installed metadata of inferflux says.
CUDA_EXTRA = extra_requirements("cuda", metadata.requires("inferflux"))

pytestmark = pytest.mark.skipif(
    CudaContext().detect().present, reason="this machine has a CUDA device"
)


def distribution_doubles(site: Path) -> dict[str, str]:
    """Test-double dist-info folders for the cuda extra's distributions this venv lacks; the
    environment that puts them on a subprocess's path."""
    for name in CUDA_EXTRA:
        try:
            metadata.distribution(name)
            continue
        except metadata.PackageNotFoundError:
            pass
        info = site / f"{name.replace('-', '_')}-0.0.0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.0.0\n")
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": path}


@pytest.fixture(scope="module")
def cuda_extra_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return distribution_doubles(tmp_path_factory.mktemp("site"))


@pytest.fixture(scope="module")
def server(
    cuda_extra_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[UpstreamServer]:
    model = {"name": "smollm2", "context_length": 512, "max_sequences": 2}
    running = start_serve(tmp_path_factory.mktemp("serve"), [model], env=cuda_extra_env)
    yield running
    stop_upstream(running)


def test_the_extra_counts_as_installed_for_the_server(cuda_extra_env: dict[str, str]) -> None:
    assert {"vllm", "llama-cpp-python", "gguf"} <= set(CUDA_EXTRA)
    script = "from inferflux_core.extras import extra_installed; print(extra_installed('cuda'))"
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, **cuda_extra_env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "True"


def test_serve_answers_on_the_cpu_and_warns_once_at_startup(server: UpstreamServer) -> None:
    reply = httpx.post(
        f"{server.api_url}/chat/completions",
        headers={"Authorization": f"Bearer {server.api_key}"},
        json={
            "model": "smollm2",
            "messages": [{"role": "user", "content": "Say hi."}],
            "max_tokens": 4,
        },
        timeout=60,
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"] is not None
    log = server.log_path.read_text(errors="replace")
    assert log.count(WARNING) == 1, log[-2000:]


def test_plugins_check_reports_the_same(cuda_extra_env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "inferflux_core.cli.main", "plugins", "--check", "--json"],
        env={**os.environ, **cuda_extra_env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    (entry,) = [check for check in json.loads(done.stdout) if check["name"] == "devices"]
    assert entry["status"] == "FAIL"
    (problem,) = entry["problems"]
    assert problem.startswith("inferflux[cuda] is installed but no CUDA device was found")
