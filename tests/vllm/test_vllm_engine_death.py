"""``inferflux serve`` with ``backend: vllm``, as a user runs it: it answers the OpenAI SDK,
and when vLLM's engine core dies the model is marked failed (``/readyz`` says why) and every
request is a 503 at once, never a hang."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from inferflux_core.auth.keys import generate_key
from tests.conftest import free_port
from tests.vllm.support import CONTEXT, VLLM_MODEL

#: Seconds ``inferflux serve`` may take to list the model (vLLM starts slowly when loaded).
START_SECONDS = 600


@dataclass
class Served:
    """An ``inferflux serve`` process and how to call it."""

    process: subprocess.Popen[bytes]
    base_url: str
    api_key: str
    log: Path

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.base_url}/v1", api_key=self.api_key, max_retries=0)

    def readyz(self) -> httpx.Response:
        return httpx.get(f"{self.base_url}/readyz", timeout=10)


def serve(directory: Path, options: dict[str, object]) -> Served:
    """Start ``inferflux serve`` with one ``vllm`` model; return once it is ready."""
    port = free_port()
    model = {
        "name": VLLM_MODEL,
        "backend": "vllm",
        "context_length": CONTEXT,
        "max_sequences": 4,
        "options": options,
    }
    config = {"server": {"port": port, "log_level": "warning"}, "models": [model]}
    path = directory / "inferflux.json"
    path.write_text(json.dumps(config))
    api_key, _ = generate_key()
    log = directory / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "inferflux_core.cli.main", "serve", "-c", str(path)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "INFERFLUX_API_KEY": api_key},
        )
    served = Served(process, f"http://127.0.0.1:{port}", api_key, log)
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"inferflux serve exited: {log.read_text()[-3000:]}")
        try:
            if served.readyz().status_code == 200:
                return served
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop(served)
    raise RuntimeError(f"inferflux serve did not become ready: {log.read_text()[-3000:]}")


def stop(served: Served) -> None:
    """Terminate the server and whatever vLLM processes it left."""
    children = _psutil().Process(served.process.pid).children(recursive=True)
    served.process.terminate()
    try:
        served.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        served.process.kill()
        served.process.wait(timeout=10)
    for child in children:
        if child.is_running():
            child.kill()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, vllm_folder: Path) -> Iterator[Served]:
    """``inferflux serve`` with ``backend: vllm`` on the multi-process engine."""
    running = serve(tmp_path_factory.mktemp("vllm-serve"), {"distributed_executor_backend": "mp"})
    try:
        yield running
    finally:
        stop(running)


def engine_core(served: Served) -> _psutil().Process:
    """vLLM's engine-core process under the server."""
    for child in _psutil().Process(served.process.pid).children(recursive=True):
        if "EngineCore" in child.name() or "EngineCore" in " ".join(child.cmdline()):
            return child
    raise AssertionError("no EngineCore process under the server")


def test_a_dead_engine_core_fails_the_model_and_503s_at_once(served: Served) -> None:
    sdk = served.client()
    answer = sdk.chat.completions.create(
        model=VLLM_MODEL,
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=8,
        temperature=0,
    )
    assert answer.choices[0].message.content
    engine_core(served).kill()
    deadline = time.monotonic() + 60
    while served.readyz().status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    readyz = served.readyz()
    assert readyz.status_code == 503, readyz.text
    assert "engine core" in readyz.text
    for _ in range(2):
        began = time.monotonic()
        with pytest.raises(openai.APIStatusError) as refused:
            sdk.chat.completions.create(
                model=VLLM_MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
            )
        assert refused.value.status_code == 503
        assert time.monotonic() - began < 5
    failed = served.readyz().json()
    assert failed["status"] == "failed", failed
    assert failed["failed"][0]["model"] == VLLM_MODEL
    assert served.process.poll() is None  # the server itself lives on, and says why


def _psutil() -> Any:
    """psutil (vLLM depends on it; imported here so the module collects without vLLM)."""
    import psutil

    return psutil
