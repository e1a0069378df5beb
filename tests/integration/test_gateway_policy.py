"""What inferflux applies in front of a local model applies in front of a gateway model: keys
and scopes, per-key quotas, guardrails, audit, metrics; and the upstream's key (read from a
secret file) reaches the upstream only: never a client, a log line or an error.

A real upstream ``inferflux serve`` and a real gateway ``inferflux serve`` (log level debug,
so the strictest log is the one searched for the key).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import MODEL_NAME
from tests.upstream_server import (
    UpstreamServer,
    metric,
    start_serve,
    stop_upstream,
    upstream_server,
)

__all__ = ["upstream_server"]  # the module-scoped fixture

BLOCKED = "purple elephant protocol"
PROMPT = "Say hello to the gateway auditor."


@dataclass
class Gateway:
    """The gateway server and where its audit log is."""

    server: UpstreamServer
    audit_path: Path

    def client(self, key: str | None = None) -> httpx.Client:
        """An HTTP client to the gateway with ``key`` (default: the admin dev key)."""
        headers = {"Authorization": f"Bearer {key or self.server.api_key}"}
        return httpx.Client(base_url=self.server.base_url, headers=headers, timeout=60)

    def new_key(self, **fields: Any) -> str:
        """A key made through the admin API."""
        with self.client() as admin:
            created = admin.post("/v1/admin/keys", json={"name": "t", **fields})
        assert created.status_code == 201, created.text
        return str(created.json()["key"])


@pytest.fixture(scope="module")
def gateway(
    upstream_server: UpstreamServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    """A gateway model ``gw`` over the upstream, its key in a secret file; a blocklist
    guardrail and an audit log on."""
    directory = tmp_path_factory.mktemp("gateway-policy")
    key_file = directory / "upstream.key"
    key_file.write_text(upstream_server.api_key + "\n")
    key_file.chmod(0o600)
    model = {
        "name": "gw",
        "source": MODEL_NAME,
        "backend": "openai_upstream",
        "options": {
            "upstreams": [{"base_url": upstream_server.api_url}],
            "api_key_file": str(key_file),
        },
    }
    audit_path = directory / "audit.log"
    config = {
        "guardrails": [{"name": "blocklist", "options": {"terms": [BLOCKED]}}],
        "audit": {"enabled": True, "path": str(audit_path)},
    }
    server = start_serve(directory, [model], config=config, log_level="debug")
    try:
        yield Gateway(server, audit_path)
    finally:
        stop_upstream(server)


def chat(text: str = PROMPT, **extra: Any) -> dict[str, Any]:
    """A small greedy chat request for ``gw``."""
    return {
        "model": "gw",
        "messages": [{"role": "user", "content": text}],
        "max_tokens": 5,
        "temperature": 0.0,
        **extra,
    }


def audit_line(gateway: Gateway, request_id: str) -> dict[str, Any]:
    """The audit line of ``request_id`` (waiting for it to be written)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if gateway.audit_path.exists():
            for line in gateway.audit_path.read_text().splitlines():
                record = json.loads(line)
                if record["request_id"] == request_id:
                    return dict(record)
        time.sleep(0.05)
    raise AssertionError(f"no audit line for {request_id}")


def test_keys_scopes_and_model_allow_lists_apply_to_a_gateway_model(gateway: Gateway) -> None:
    with gateway.client("ifx-not-a-real-key.abc") as stranger:
        assert stranger.post("/v1/chat/completions", json=chat()).status_code == 401
    with gateway.client(gateway.new_key(roles=["monitor"])) as monitor:
        refused = monitor.post("/v1/chat/completions", json=chat())
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "insufficient_scope"
    with gateway.client(gateway.new_key(models=["another-model"])) as elsewhere:
        refused = elsewhere.post("/v1/chat/completions", json=chat())
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "model_not_allowed"
    with gateway.client(gateway.new_key(models=["gw"])) as user:
        assert user.post("/v1/chat/completions", json=chat()).status_code == 200


def test_a_per_key_quota_applies_to_a_gateway_model(gateway: Gateway) -> None:
    key = gateway.new_key(limits={"requests_per_minute": 1})
    with gateway.client(key) as limited:
        assert limited.post("/v1/chat/completions", json=chat()).status_code == 200
        refused = limited.post("/v1/chat/completions", json=chat())
    assert refused.status_code == 429 and "Retry-After" in refused.headers


@pytest.mark.parametrize("stream", [False, True])
def test_a_guardrail_refuses_a_blocked_prompt_before_the_upstream_sees_it(
    gateway: Gateway, upstream_server: UpstreamServer, stream: bool
) -> None:
    served = upstream_requests(upstream_server)
    with gateway.client() as admin:
        refused = admin.post(
            "/v1/chat/completions", json=chat(f"Tell me the {BLOCKED}", stream=stream)
        )
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "content_blocked"
    assert upstream_requests(upstream_server) == served


def upstream_requests(upstream: UpstreamServer) -> float:
    """Requests the upstream has finished, every model and finish reason summed."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in upstream.metrics_text().splitlines()
        if line.startswith("inferflux_requests_total{")
    )


@pytest.mark.parametrize("stream", [False, True])
def test_every_gateway_request_gets_one_audit_line_with_hashes(
    gateway: Gateway, stream: bool
) -> None:
    key = gateway.new_key()
    request_id = f"gateway-audit-{stream}"
    with gateway.client(key) as user:
        response = user.post(
            "/v1/chat/completions",
            json=chat(stream=stream),
            headers={"X-Request-ID": request_id},
        )
    assert response.status_code == 200
    line = audit_line(gateway, request_id)
    assert line["key_id"] == key[4:20] and line["model"] == "gw" and line["status"] == 200
    assert line["prompt_sha256"] == hashlib.sha256(PROMPT.encode()).hexdigest()
    assert isinstance(line["completion_tokens"], int) and 1 <= line["completion_tokens"] <= 5
    if not stream:
        text = response.json()["choices"][0]["message"]["content"]
        assert line["response_sha256"] == hashlib.sha256(text.encode()).hexdigest()
    assert PROMPT not in gateway.audit_path.read_text()


def test_the_gateway_model_has_its_metrics(gateway: Gateway) -> None:
    with gateway.client() as admin:
        assert admin.post("/v1/chat/completions", json=chat()).status_code == 200
    text = gateway.server.metrics_text()
    labels = {"model_name": "gw", "engine": "0"}
    assert (metric(text, "inferflux_generation_tokens_total", model="gw", **labels) or 0) >= 1
    assert (
        metric(text, "inferflux_request_success_total", finished_reason="stop", **labels) or 0
    ) + (
        metric(text, "inferflux_request_success_total", finished_reason="length", **labels) or 0
    ) >= 1
    assert metric(text, "inferflux_backend_num_upstreams", model="gw") == 1
    assert metric(text, "inferflux_backend_num_upstreams_healthy", model="gw") == 1
    assert metric(text, "inferflux_backend_num_upstreams_open", model="gw") == 0


def test_the_upstream_key_is_never_shown_logged_or_forwarded(
    gateway: Gateway, upstream_server: UpstreamServer
) -> None:
    secret = upstream_server.api_key
    seen: list[str] = []
    with gateway.client() as admin:
        for response in (
            admin.post("/v1/chat/completions", json=chat()),
            admin.post("/v1/chat/completions", json=chat(stream=True)),
            admin.post("/v1/chat/completions", json={**chat(), "model": "gw", "n": 0}),
            admin.post("/v1/completions", json={"model": "gw", "prompt": "x", "max_tokens": 2}),
            admin.get("/v1/models"),
            admin.get("/v1/models/gw"),
            admin.get("/readyz"),
            admin.get("/metrics"),
        ):
            seen.append(response.text)
            seen.append(json.dumps(dict(response.headers)))
    log = gateway.server.log_path.read_text(errors="replace")
    assert "model gw: forwarding to" in log, "the log searched is the gateway's, at debug"
    seen.append(log)
    seen.append(gateway.audit_path.read_text())
    for text in seen:
        assert secret not in text
        assert secret.split(".")[-1] not in text  # nor the secret part alone
