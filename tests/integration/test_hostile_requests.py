"""The default ``inferflux serve``, with a guardrail and the audit log on, against hostile requests.

One real server process for the module; every case in :mod:`tests.hostile_cases` is sent by a
key that has only the ``inference`` scope (or by the admin key, where the case says so). Each
must get a JSON answer below 500 in OpenAI's error shape, quickly, and leave the server
answering ``/healthz`` at once; at the end the process is alive, holds no sequence, still
generates, and has written no traceback to its log.
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

import httpx
import pytest

from inferflux_core.auth.keys import generate_key
from tests.conftest import free_port
from tests.hostile_cases import CASES, MODEL, Case

#: Slowest acceptable answer to one hostile request, in seconds.
CASE_SECONDS = 60.0
#: ``/healthz`` right after a case.
HEALTH_SECONDS = 2.0


@dataclass
class ServerProcess:
    """A real ``inferflux serve`` and what the battery needs to talk to it."""

    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    audit_path: Path
    admin_key: str
    inference_key: str

    def log(self) -> str:
        """Everything the process wrote so far."""
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """``inferflux serve`` on loopback with the default model, a blocklist and an audit log."""
    directory = tmp_path_factory.mktemp("hostile")
    port = free_port()
    config = {
        "server": {"port": port, "log_level": "info"},
        "models": [{"name": MODEL, "context_length": 2048, "max_sequences": 8}],
        "guardrails": [{"name": "blocklist", "options": {"terms": ["purple elephant"]}}],
        "audit": {"enabled": True, "path": str(directory / "audit.log")},
    }
    config_path = directory / "config.json"
    config_path.write_text(json.dumps(config))  # JSON is YAML
    admin_key, _ = generate_key()
    log_path = directory / "server.log"
    env = {**os.environ, "INFERFLUX_API_KEY": admin_key}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "inferflux_core.cli.main", "serve", "-c", str(config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(process, base_url)
        created = httpx.post(
            f"{base_url}/v1/admin/keys",
            json={"name": "battery", "roles": [], "scopes": ["inference"]},
            headers={"Authorization": f"Bearer {admin_key}"},
            timeout=10,
        )
        created.raise_for_status()
        running = ServerProcess(
            process, base_url, log_path, directory / "audit.log", admin_key, created.json()["key"]
        )
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def _wait_ready(process: subprocess.Popen[bytes], base_url: str) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"inferflux serve exited with {process.returncode}")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("inferflux serve did not become ready")


def _headers(case: Case, server: ServerProcess) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if case.key == "inference":
        headers["Authorization"] = f"Bearer {server.inference_key}"
    elif case.key == "admin":
        headers["Authorization"] = f"Bearer {server.admin_key}"
    headers.update(case.headers)
    return headers


def _check_error_body(response: httpx.Response) -> None:
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), body
    error = body["error"]
    assert isinstance(error.get("message"), str) and error["message"], error
    assert isinstance(error.get("type"), str) and error["type"], error
    assert set(error) >= {"message", "type", "param", "code"}, error


def _no_constants(name: str) -> None:
    raise AssertionError(f"the answer holds a bare {name}, which is not JSON")


def _check_event_stream(text: str) -> None:
    """Every event is strict JSON (an error event in OpenAI's shape), ending with [DONE]."""
    data = [line.removeprefix("data: ") for line in text.splitlines() if line.startswith("data: ")]
    assert data and data[-1] == "[DONE]", text[-500:]
    for item in data[:-1]:
        event = json.loads(item, parse_constant=_no_constants)
        if "error" in event:
            assert isinstance(event["error"].get("message"), str), event


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_hostile_request_gets_a_json_answer_and_the_server_lives(
    hostile_server: ServerProcess, case: Case
) -> None:
    started = time.monotonic()
    response = httpx.request(
        case.method,
        hostile_server.base_url + case.path,
        content=case.content(),
        headers=_headers(case, hostile_server),
        timeout=CASE_SECONDS,
    )
    elapsed = time.monotonic() - started
    assert response.status_code < 500, (response.status_code, response.text[:500])
    if case.expect is not None:
        assert response.status_code in case.expect, (response.status_code, response.text[:500])
    assert elapsed < CASE_SECONDS
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        assert response.status_code == 200
        _check_event_stream(response.text)
    else:
        json.loads(response.text, parse_constant=_no_constants)  # strict JSON: no bare NaN
        if response.status_code >= 400:
            _check_error_body(response)
    probe = time.monotonic()
    health = httpx.get(f"{hostile_server.base_url}/healthz", timeout=HEALTH_SECONDS)
    assert health.status_code == 200
    assert time.monotonic() - probe < HEALTH_SECONDS
    assert hostile_server.process.poll() is None, "the server process died"


def test_after_the_battery_the_server_is_idle_generates_and_logged_no_traceback(
    hostile_server: ServerProcess,
) -> None:
    auth = {"Authorization": f"Bearer {hostile_server.admin_key}"}
    deadline = time.monotonic() + 30
    held = None
    while time.monotonic() < deadline:
        metrics = httpx.get(f"{hostile_server.base_url}/metrics", headers=auth, timeout=5).text
        held = [
            float(value)
            for value in re.findall(
                r"^inferflux_(?:active_sequences|waiting_requests)\{[^}]*\} (\S+)$",
                metrics,
                re.M,
            )
        ]
        if held and not any(held):
            break
        time.sleep(0.5)
    assert held is not None and not any(held), held
    answer = httpx.post(
        f"{hostile_server.base_url}/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
        headers={"Authorization": f"Bearer {hostile_server.inference_key}"},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["usage"]["completion_tokens"] > 0
    assert hostile_server.process.poll() is None
    log = hostile_server.log()
    assert "Traceback" not in log, log[-4000:]
    assert hostile_server.audit_path.exists()
