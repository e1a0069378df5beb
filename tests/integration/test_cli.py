"""``inferflux serve`` as a user runs it: a subprocess, real port, clear startup errors."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import MODEL_NAME, free_port

INFERFLUX = [sys.executable, "-m", "inferflux_core.cli.main"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERFLUX_")}
    env.update(extra)
    return env


def _read_lines(process: subprocess.Popen[str], lines: list[str]) -> threading.Thread:
    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return thread


def test_serve_with_no_config_serves_the_default_model() -> None:
    port = free_port()
    process = subprocess.Popen(
        [*INFERFLUX, "serve", "--port", str(port)],
        env=_env(INFERFLUX_SERVER__HEADER_TIMEOUT_SECONDS="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = _read_lines(process, lines)
    stopping = False
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, "".join(lines)
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.25)
        # A connection that sends no request is closed after the header timeout.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as silent:
            started = time.monotonic()
            assert silent.recv(1) == b""
            assert time.monotonic() - started < 5
        # The development key is printed once, on its own line, before the server serves.
        keys = [line.strip() for line in lines if line.strip().startswith("ifx-")]
        assert len(keys) == 1, "".join(lines)
        anonymous = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x")
        with pytest.raises(openai.AuthenticationError):
            anonymous.with_options(max_retries=0).models.list()
        client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key=keys[0], max_retries=0
        )
        assert [m.id for m in client.models.list().data] == [MODEL_NAME]
        reply = client.chat.completions.create(
            model=MODEL_NAME, messages=[{"role": "user", "content": "Hello!"}], max_tokens=8
        )
        assert reply.choices[0].message.content
        # A request still generating when the graceful shutdown times out gets a 503.
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(
                httpx.post,
                f"http://127.0.0.1:{port}/v1/completions",
                headers={"Authorization": f"Bearer {keys[0]}"},
                json={
                    "model": MODEL_NAME,
                    "prompt": "Once upon a time",
                    "max_tokens": 4000,
                    "ignore_eos": True,
                },
                timeout=60,
            )
            time.sleep(1.0)
            process.send_signal(signal.SIGTERM)
            stopping = True
            cut_short = pending.result()
        assert cut_short.status_code == 503, cut_short.text
        assert cut_short.json()["error"]["message"].startswith("the server is shutting down")
    finally:
        if not stopping:  # a second signal would make uvicorn skip its graceful shutdown
            process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        reader.join(timeout=10)
    output = "".join(lines)
    # uvicorn shuts down gracefully, then re-raises the signal it caught.
    assert process.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output
    assert "Traceback" not in output
    assert output.count(keys[0]) == 1, "the development key was printed more than once"


def test_serve_on_a_public_address_without_keys_refuses_to_start() -> None:
    result = subprocess.run(
        [*INFERFLUX, "serve", "--host", "0.0.0.0", "--port", str(free_port())],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "nobody could call this server" in result.stderr
    assert "auth.mode: disabled" in result.stderr
    assert "Traceback" not in result.stderr


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


def test_serve_with_an_encrypted_store_and_no_passphrase_refuses_to_start(
    tmp_path: Path,
) -> None:
    policy = f'{{"store": "encrypted_file", "options": {{"path": "{tmp_path / "p.bin"}"}}}}'
    result = subprocess.run(
        [*INFERFLUX, "serve", "--port", str(free_port())],
        env=_env(INFERFLUX_POLICY=policy),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "INFERFLUX_POLICY_PASSPHRASE is not set" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "p.bin").exists()
