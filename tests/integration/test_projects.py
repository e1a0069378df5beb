"""Project scoping on a real server: keys of two projects, a scoped model, a scoped adapter.

A key sees its project's models and unscoped ones; another project's model is absent from
``/v1/models`` and is a 404 ``model_not_found`` on every front door, as if it did not exist.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from inferflux_core.auth.policy_admin import KeyCreate, PolicyAdmin
from inferflux_core.config import AdapterConfig, ModelConfig, ServerConfig, Settings
from inferflux_core.testing.lora import write_test_lora
from inferflux_plugins.policy.encrypted import PASSPHRASE_ENV
from tests.conftest import RunningServer, free_port, start_server

SCOPED = "team-a-model"
SHARED = "shared"
ADAPTER = f"{SHARED}:beta"


@pytest.fixture(scope="module")
def scoped_server(
    model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    lora = write_test_lora(model_path, tmp_path_factory.mktemp("lora") / "beta.gguf")
    small: dict[str, Any] = {"context_length": 512, "max_sequences": 2}
    settings = Settings(
        server=ServerConfig(port=free_port(), log_level="warning"),
        models=[
            ModelConfig(name=SCOPED, project="team-a", **small),
            ModelConfig(
                name=SHARED,
                adapters=[AdapterConfig(name="beta", source=str(lora), project="team-b")],
                **small,
            ),
        ],
    )
    running = start_server(settings)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def keys(scoped_server: RunningServer) -> dict[str, str]:
    admin = PolicyAdmin(scoped_server.access.store)
    made = {
        project: admin.create_key(KeyCreate(name=project, roles=["user"], project=project))
        for project in ("team-a", "team-b")
    }
    return {project: record["key"] for project, record in made.items()}


def _openai(server: RunningServer, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.api_url, api_key=key, max_retries=0, timeout=120)


def _listed(server: RunningServer, key: str) -> dict[str, dict[str, Any]]:
    return {m.id: m.model_dump() for m in _openai(server, key).models.list().data}


def test_each_project_lists_its_models_and_the_unscoped_ones(
    scoped_server: RunningServer, keys: dict[str, str]
) -> None:
    assert set(_listed(scoped_server, keys["team-a"])) == {SCOPED, SHARED}
    team_b = _listed(scoped_server, keys["team-b"])
    assert set(team_b) == {SHARED, ADAPTER}
    assert team_b[ADAPTER]["parent"] == SHARED
    assert set(_listed(scoped_server, scoped_server.api_key)) == {SCOPED, SHARED, ADAPTER}


def test_another_projects_model_is_not_found_on_the_openai_doors(
    scoped_server: RunningServer, keys: dict[str, str]
) -> None:
    client = _openai(scoped_server, keys["team-b"])
    message = [{"role": "user", "content": "Hi"}]
    calls = [
        lambda: client.chat.completions.create(model=SCOPED, messages=message, max_tokens=2),
        lambda: client.completions.create(model=SCOPED, prompt="Hi", max_tokens=2),
        lambda: client.responses.create(model=SCOPED, input="Hi", max_output_tokens=16),
        lambda: client.embeddings.create(model=SCOPED, input="Hi"),
        lambda: client.models.retrieve(SCOPED),
    ]
    for call in calls:
        with pytest.raises(openai.NotFoundError) as caught:
            call()
        assert caught.value.code == "model_not_found"
        assert f"available: {SHARED}, {ADAPTER}" in str(caught.value)
    team_a = _openai(scoped_server, keys["team-a"])
    with pytest.raises(openai.NotFoundError):
        team_a.chat.completions.create(model=ADAPTER, messages=message, max_tokens=2)
    with pytest.raises(openai.NotFoundError):
        team_a.chat.completions.create(
            model=SHARED, messages=message, max_tokens=2, extra_body={"adapter": "beta"}
        )
    reply = team_a.chat.completions.create(model=SCOPED, messages=message, max_tokens=2)
    assert reply.model == SCOPED


def test_a_hidden_model_answers_as_a_missing_one(
    scoped_server: RunningServer, keys: dict[str, str]
) -> None:
    def error(model: str) -> dict[str, Any]:
        response = httpx.post(
            f"{scoped_server.api_url}/chat/completions",
            headers={"Authorization": f"Bearer {keys['team-b']}"},
            json={"model": model, "messages": [{"role": "user", "content": "Hi"}]},
            timeout=60,
        )
        assert response.status_code == 404
        body = dict(response.json()["error"])
        body["message"] = body["message"].replace(repr(model), "MODEL")
        return body

    assert error(SCOPED) == error("no-such-model")


def test_another_projects_model_is_not_found_on_messages(
    scoped_server: RunningServer, keys: dict[str, str]
) -> None:
    client = anthropic.Anthropic(
        base_url=scoped_server.base_url, api_key=keys["team-b"], max_retries=0, timeout=120
    )
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(
            model=SCOPED, max_tokens=4, messages=[{"role": "user", "content": "Hi"}]
        )
    assert caught.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]


def test_adapters_registered_at_runtime_keep_to_their_project(
    scoped_server: RunningServer, keys: dict[str, str], model_path: Path, tmp_path: Path
) -> None:
    lora = str(write_test_lora(model_path, tmp_path / "gamma.gguf", seed=2))
    admin = PolicyAdmin(scoped_server.access.store)
    writer = admin.create_key(
        KeyCreate(name="a-writer", roles=["user"], scopes=["models:write"], project="team-a")
    )["key"]

    def register(model: str, body: dict[str, Any]) -> httpx.Response:
        return httpx.post(
            f"{scoped_server.api_url}/admin/models/{model}/adapters",
            headers={"Authorization": f"Bearer {writer}"},
            json={"source": lora, **body},
            timeout=120,
        )

    refused = register(SHARED, {"name": "gamma", "project": "team-b"})
    assert refused.status_code == 403 and refused.json()["error"]["param"] == "project"
    created = register(SHARED, {"name": "gamma", "project": "team-a"})
    assert created.status_code == 201, created.text
    assert created.json()["id"] == f"{SHARED}:gamma" and created.json()["parent"] == SHARED
    assert f"{SHARED}:gamma" in _listed(scoped_server, keys["team-a"])
    assert f"{SHARED}:gamma" not in _listed(scoped_server, keys["team-b"])
    team_b = _openai(scoped_server, keys["team-b"])
    with pytest.raises(openai.NotFoundError):
        team_b.completions.create(model=f"{SHARED}:gamma", prompt="Hi", max_tokens=2)
    user = httpx.post(
        f"{scoped_server.api_url}/admin/models/{SHARED}/adapters",
        headers={"Authorization": f"Bearer {keys['team-a']}"},
        json={"name": "delta", "source": lora, "project": "team-a"},
        timeout=60,
    )
    assert user.status_code == 403  # no models:write


def test_inferflux_admin_creates_project_keys_in_an_encrypted_policy_file(tmp_path: Path) -> None:
    config = tmp_path / "server.yaml"
    config.write_text(
        f"policy:\n  store: encrypted_file\n  options:\n    path: {tmp_path / 'policy.bin'}\n"
    )
    admin = [sys.executable, "-m", "inferflux_core.cli.main", "admin", "--config", str(config)]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("INFERFLUX_")}
    env = {**clean, PASSPHRASE_ENV: "projects passphrase"}

    def run(*args: str) -> dict[str, Any]:
        done = subprocess.run([*admin, *args], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return dict(json.loads(done.stdout))

    created = run("keys", "create", "--name", "alice", "--role", "user", "--project", "team-a")
    assert created["project"] == "team-a"
    moved = run("keys", "update", created["id"], "--project", "team-b")
    assert moved["project"] == "team-b"
    assert run("keys", "list", "--json")["data"][0]["project"] == "team-b"


def test_an_adapter_serves_on_every_generating_door_and_not_for_embeddings(
    scoped_server: RunningServer, keys: dict[str, str]
) -> None:
    client = _openai(scoped_server, keys["team-b"])
    chat = client.chat.completions.create(
        model=ADAPTER, messages=[{"role": "user", "content": "Hi"}], max_tokens=2
    )
    assert chat.model == ADAPTER
    response = client.responses.create(model=ADAPTER, input="Hi", max_output_tokens=16)
    assert response.model == ADAPTER and response.status in ("completed", "incomplete")
    messages = anthropic.Anthropic(
        base_url=scoped_server.base_url, api_key=keys["team-b"], max_retries=0, timeout=120
    ).messages.create(model=ADAPTER, max_tokens=2, messages=[{"role": "user", "content": "Hi"}])
    assert messages.model == ADAPTER
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model=ADAPTER, input="Hi")
    assert caught.value.code == "unsupported"
