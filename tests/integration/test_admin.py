"""The admin API, ``inferctl admin`` against it, and ``inferflux admin`` on a policy file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from inferflux_plugins.policy.encrypted import PASSPHRASE_ENV
from tests.conftest import RunningServer

ADMIN = "/v1/admin"


@pytest.fixture
def http(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, headers=server.auth_headers, timeout=60) as client:
        yield client


def _error(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    return dict(response.json()["error"])


def test_a_key_is_shown_once_then_listed_without_secret_or_hash(
    server: RunningServer, http: httpx.Client
) -> None:
    body = {"name": "ci", "roles": ["user"], "models": ["m1"], "expires_in": 3600}
    created = http.post(f"{ADMIN}/keys", json=body)
    assert created.status_code == 201
    record = created.json()
    key, key_id = record.pop("key"), record["id"]
    assert key.startswith(f"ifx-{key_id}.")
    assert record["models"] == ["m1"] and record["expires_at"] > record["created_at"]
    listed = http.get(f"{ADMIN}/keys").json()["data"]
    assert record in listed
    assert key.split(".")[1] not in json.dumps(listed)
    assert all("key_hash" not in r and "key" not in r for r in listed)
    assert http.get(f"{ADMIN}/keys/{key_id}").json() == record


def test_keys_can_be_changed_and_revoked(http: httpx.Client) -> None:
    created = http.post(f"{ADMIN}/keys", json={"name": "x"}).json()
    key_id = created["id"]
    patched = http.patch(f"{ADMIN}/keys/{key_id}", json={"roles": ["monitor"], "name": "y"})
    assert patched.json()["roles"] == ["monitor"] and patched.json()["name"] == "y"
    auth = {"Authorization": f"Bearer {created['key']}"}
    assert http.get("/metrics", headers=auth).status_code == 200
    revoked = http.post(f"{ADMIN}/keys/{key_id}/revoke").json()
    assert revoked["revoked"] is True and revoked["revoked_at"] is not None
    assert http.get("/metrics", headers=auth).status_code == 401


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"name": "x", "scopes": ["root"]}, "scopes"),
        ({"name": "x", "roles": ["superuser"]}, "roles"),
        ({"name": ""}, "name"),
        ({"name": "x", "surprise": 1}, "surprise"),
        ({"name": "x", "limits": {"requests_per_minute": 0}}, "limits.requests_per_minute"),
    ],
)
def test_invalid_key_requests_are_400_naming_the_field(
    server: RunningServer, http: httpx.Client, body: dict[str, object], param: str
) -> None:
    version = server.access.store.read().version
    assert _error(http.post(f"{ADMIN}/keys", json=body), 400)["param"] == param
    assert server.access.store.read().version == version


def test_unknown_keys_are_404(http: httpx.Client) -> None:
    for response in (
        http.get(f"{ADMIN}/keys/0123456789abcdef"),
        http.post(f"{ADMIN}/keys/not-an-id/revoke"),
        http.patch(f"{ADMIN}/keys/0123456789abcdef", json={"name": "z"}),
    ):
        _error(response, 404)


def test_custom_roles_can_be_defined_used_and_deleted(http: httpx.Client) -> None:
    assert http.put(f"{ADMIN}/roles/reader", json={"scopes": ["models:read"]}).status_code == 200
    roles = http.get(f"{ADMIN}/roles").json()["roles"]
    assert roles["reader"] == ["models:read"] and "admin" in roles
    key = http.post(f"{ADMIN}/keys", json={"name": "r", "roles": ["reader"]}).json()["key"]
    auth = {"Authorization": f"Bearer {key}"}
    assert http.get("/v1/models", headers=auth).status_code == 200
    assert http.delete(f"{ADMIN}/roles/reader").status_code == 200
    assert http.get("/v1/models", headers=auth).status_code == 403
    _error(http.put(f"{ADMIN}/roles/admin", json={"scopes": []}), 400)
    _error(http.put(f"{ADMIN}/roles/x", json={"scopes": ["everything"]}), 400)
    _error(http.delete(f"{ADMIN}/roles/never-made"), 404)


def test_the_policy_exports_and_imports(server: RunningServer, http: httpx.Client) -> None:
    exported = http.get(f"{ADMIN}/policy").json()
    assert exported["version"] == server.access.store.read().version
    assert all(r["key_hash"].startswith("sha256:") for r in exported["keys"].values())
    imported = http.put(f"{ADMIN}/policy", json=exported)
    assert imported.status_code == 200 and imported.json()["version"] == exported["version"] + 1
    assert http.get("/v1/models").status_code == 200  # our own key survived the import
    _error(http.put(f"{ADMIN}/policy", json={"keys": {"x": {"name": "broken"}}}), 400)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("INFERFLUX_")}
    return subprocess.run(
        [sys.executable, "-m", *args],
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_inferctl_admin_manages_keys_through_the_server(server: RunningServer) -> None:
    ctl = ("inferflux_core.cli.inferctl", "--url", server.base_url)
    env = {"INFERFLUX_API_KEY": server.api_key}
    created = _cli(
        *ctl, "admin", "keys", "create", "--name", "ctl", "--role", "user", "--rpm", "5", env=env
    )
    assert created.returncode == 0, created.stderr
    record = json.loads(created.stdout)
    assert record["limits"]["requests_per_minute"] == 5
    listed = _cli(*ctl, "admin", "keys", "list", env=env)
    assert record["id"] in listed.stdout and record["key"] not in listed.stdout
    revoked = _cli(*ctl, "admin", "keys", "revoke", record["id"], env=env)
    assert json.loads(revoked.stdout)["revoked"] is True
    refused = _cli(*ctl, "--api-key", record["key"], "admin", "keys", "list")
    assert refused.returncode == 1 and "401" in refused.stderr and "revoked" in refused.stderr
    models = _cli(*ctl, "models", env=env)
    assert models.returncode == 0 and models.stdout.strip()
    anonymous = _cli(*ctl, "chat", "hi")
    assert anonymous.returncode == 1 and "Traceback" not in anonymous.stderr
    assert "401" in anonymous.stderr and "INFERFLUX_API_KEY" in anonymous.stderr


def test_inferflux_admin_edits_an_encrypted_policy_file(tmp_path: Path) -> None:
    config = tmp_path / "server.yaml"
    policy = tmp_path / "policy.bin"
    config.write_text(f"policy:\n  store: encrypted_file\n  options:\n    path: {policy}\n")
    admin = ("inferflux_core.cli.main", "admin", "--config", str(config))
    env = {PASSPHRASE_ENV: "cli passphrase"}
    created = _cli(*admin, "keys", "create", "--name", "ops", "--role", "operator", env=env)
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)["key"]
    assert key.encode() not in policy.read_bytes()
    listed = _cli(*admin, "keys", "list", "--json", env=env)
    assert json.loads(listed.stdout)["data"][0]["roles"] == ["operator"]
    table = _cli(*admin, "keys", "list", env=env).stdout.splitlines()
    header = table[0].split("\t")
    (row,) = [line.split("\t") for line in table[1:]]
    assert row[header.index("name")] == "ops" and row[header.index("roles")] == "operator"
    key_id = json.loads(created.stdout)["id"]
    raised = _cli(*admin, "keys", "update", key_id, "--max-priority", "7", env=env)
    assert raised.returncode == 0, raised.stderr
    assert json.loads(raised.stdout)["max_priority"] == 7  # the operator is not bounded
    wrong = _cli(*admin, "keys", "list", env={PASSPHRASE_ENV: "guess"})
    assert wrong.returncode == 2 and "passphrase is wrong" in wrong.stderr
    assert "Traceback" not in wrong.stderr
    missing = _cli(*admin, "keys", "list")
    assert missing.returncode == 2 and PASSPHRASE_ENV in missing.stderr


def test_inferflux_admin_refuses_the_memory_store() -> None:
    result = _cli("inferflux_core.cli.main", "admin", "keys", "list")
    assert result.returncode == 2 and "inferctl admin" in result.stderr
