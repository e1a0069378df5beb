"""``inferflux serve`` as a user runs it: a subprocess, real port, clear startup errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai

from tests.conftest import MODEL_NAME, free_port

INFERFLUX = [sys.executable, "-m", "inferflux_core.cli.main"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERFLUX_")}
    env.update(extra)
    return env


def test_serve_with_no_config_serves_the_default_model() -> None:
    port = free_port()
    process = subprocess.Popen(
        [*INFERFLUX, "serve", "--port", str(port)],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.25)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
        assert [m.id for m in client.models.list().data] == [MODEL_NAME]
        reply = client.chat.completions.create(
            model=MODEL_NAME, messages=[{"role": "user", "content": "Hello!"}], max_tokens=8
        )
        assert reply.choices[0].message.content
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    # uvicorn shuts down gracefully, then re-raises the signal it caught.
    assert process.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output
    assert "Traceback" not in output


def test_invalid_config_exits_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "server.yaml"
    config.write_text("scheduler:\n  max_queue: lots\n")
    result = subprocess.run(
        [*INFERFLUX, "serve", "--config", str(config)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "scheduler.max_queue" in result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_environment_override_exits_naming_the_key() -> None:
    result = subprocess.run(
        [*INFERFLUX, "config"],
        env=_env(INFERFLUX_SERVER__PORT="99999"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "server.port" in result.stderr


def test_environment_overrides_nested_keys() -> None:
    result = subprocess.run(
        [*INFERFLUX, "config"],
        env=_env(INFERFLUX_SCHEDULER__TOKEN_BUDGET="77"),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "token_budget: 77" in result.stdout


def test_truncated_model_file_is_refused_naming_the_file(tmp_path: Path, model_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(model_path.read_bytes()[: 64 * 1024])
    models = f'[{{"name": "broken", "source": "{broken}"}}]'
    result = subprocess.run(
        [*INFERFLUX, "serve", "--port", str(free_port())],
        env=_env(INFERFLUX_MODELS=models),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert str(broken) in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_model_file_is_refused() -> None:
    models = '[{"name": "gone", "source": "/nonexistent/model.gguf"}]'
    result = subprocess.run(
        [*INFERFLUX, "serve"],
        env=_env(INFERFLUX_MODELS=models),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "/nonexistent/model.gguf" in result.stderr


def test_devices_lists_cpu_present() -> None:
    result = subprocess.run(
        [*INFERFLUX, "devices"], env=_env(), capture_output=True, text=True, timeout=60, check=True
    )
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert "present" in lines["cpu"]
    assert set(lines) >= {"cpu", "cuda", "rocm", "metal"}
