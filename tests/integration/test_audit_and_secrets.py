"""The audit log on a real server, and the raw API key never showing up anywhere."""

from __future__ import annotations

import hashlib
import json
import logging
import time

import httpx
import pytest

from inferflux_core.auth.policy_admin import KeyCreate, PolicyAdmin
from tests.conftest import MODEL_NAME, SecuredServer

PROMPT = "Say hello to the auditor."


def _audit_lines(secured: SecuredServer) -> list[dict[str, object]]:
    return [json.loads(line) for line in secured.audit_path.read_text().splitlines()]


def _line_for(secured: SecuredServer, request_id: str) -> dict[str, object]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = [x for x in _audit_lines(secured) if x["request_id"] == request_id]
        if lines:
            assert len(lines) == 1
            return lines[0]
        time.sleep(0.05)
    raise AssertionError(f"no audit line for {request_id}")


@pytest.mark.parametrize("stream", [False, True])
def test_every_request_gets_one_audit_line_with_hashes_not_text(
    secured: SecuredServer, stream: bool
) -> None:
    server = secured.running
    request_id = f"audit-test-{stream}"
    body = {
        "model": MODEL_NAME,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": 5,
        "temperature": 0,
        "stream": stream,
    }
    headers = {**server.auth_headers, "X-Request-ID": request_id}
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        response = client.post("/v1/chat/completions", json=body, headers=headers)
    assert response.status_code == 200
    line = _line_for(secured, request_id)
    assert line["key_id"] == server.api_key[4:20] and line["auth"] == "api_key"
    assert line["model"] == MODEL_NAME and line["status"] == 200 and line["stream"] is stream
    assert line["prompt_sha256"] == hashlib.sha256(PROMPT.encode()).hexdigest()
    assert isinstance(line["prompt_tokens"], int) and line["prompt_tokens"] > 5
    assert isinstance(line["completion_tokens"], int) and 1 <= line["completion_tokens"] <= 5
    assert isinstance(line["latency_ms"], float)
    if not stream:
        text = response.json()["choices"][0]["message"]["content"]
        assert line["response_sha256"] == hashlib.sha256(text.encode()).hexdigest()
        assert line["completion_tokens"] == response.json()["usage"]["completion_tokens"]
    assert PROMPT not in secured.audit_path.read_text()


def test_refused_requests_are_audited_without_a_key_id(secured: SecuredServer) -> None:
    server = secured.running
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        client.get("/v1/models", headers={"X-Request-ID": "audit-anonymous"})
        client.get("/healthz", headers={"X-Request-ID": "audit-public"})
    line = _line_for(secured, "audit-anonymous")
    assert line["status"] == 401 and line["key_id"] is None
    assert line["code"] == "missing_credentials"
    assert not [x for x in _audit_lines(secured) if x["request_id"] == "audit-public"]


def test_the_raw_key_appears_in_no_store_log_audit_metrics_or_error(
    secured: SecuredServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = secured.running
    caplog.set_level(logging.DEBUG)
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        created = client.post(
            "/v1/admin/keys", json={"name": "leak-check"}, headers=server.auth_headers
        )
        key = created.json()["key"]
        secret = key.split(".")[1]
        headers = {"Authorization": f"Bearer {key}"}
        seen = [created.headers.get("cache-control")]
        body = {"model": MODEL_NAME, "prompt": "Hi", "max_tokens": 2}
        seen.append(client.post("/v1/completions", json=body, headers=headers).text)
        seen.append(client.post("/v1/completions", json={"model": 3}, headers=headers).text)
        seen.append(client.get("/v1/admin/keys", headers=headers).text)  # 403
        seen.append(client.get("/v1/admin/keys", headers=server.auth_headers).text)
        seen.append(client.get("/v1/admin/policy", headers=server.auth_headers).text)
        wrong = {"Authorization": f"Bearer {key[:-2]}xx"}
        seen.append(client.get("/v1/models", headers=wrong).text)
        seen.append(client.get("/metrics", headers=server.auth_headers).text)
    assert seen[0] == "no-store"
    places = {
        "responses": "\n".join(seen[1:]),
        "logs": caplog.text,
        "audit": secured.audit_path.read_text(),
        "store": secured.policy_path.read_bytes().decode("latin-1"),
        "metrics": server.engine.metrics.render().decode(),
    }
    for place, text in places.items():
        assert secret not in text, f"the key's secret appears in the {place}"
        assert server.api_key.split(".")[1] not in text, f"the admin key appears in the {place}"


def test_a_key_another_process_adds_to_the_policy_file_works_without_a_restart(
    secured: SecuredServer,
) -> None:
    from inferflux_plugins.policy.encrypted import EncryptedFilePolicyStore
    from tests.conftest import POLICY_PASSPHRASE, passphrase

    server = secured.running
    with passphrase(POLICY_PASSPHRASE):
        other_process_view = EncryptedFilePolicyStore(path=str(secured.policy_path))
    key = PolicyAdmin(other_process_view).create_key(KeyCreate(name="from-cli"))["key"]
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        response = client.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200
