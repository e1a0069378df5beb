"""``POST /v1/admin/models/pull`` on a real server, streamed with httpx; and the real SmolLM2
GGUF pulled over loopback, then served from ``registry:NAME``."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import falcon.asgi
import httpx
import pytest

from inferflux_core.api.admin_pull import PULL_PATH, ModelPullResource
from inferflux_core.auth.policy_admin import KeyCreate, PolicyAdmin
from inferflux_core.config import ModelConfig, RegistryConfig, ServerConfig, Settings
from inferflux_core.registry import Manifest, ModelRegistry
from inferflux_core.registry.pull import PullOptions, pull_model
from tests.conftest import RunningServer, free_port, start_server
from tests.pull_server import PullServer, small_gguf

SMALL = small_gguf()
SMALL_DIGEST = hashlib.sha256(SMALL).hexdigest()


@pytest.fixture(scope="module")
def files(model_path: Path) -> Iterator[PullServer]:
    server = PullServer(files={"/smollm2.gguf": model_path.read_bytes(), "/small.gguf": SMALL})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> ModelRegistry:
    return ModelRegistry(tmp_path_factory.mktemp("pull-http") / "registry")


@pytest.fixture(scope="module")
def served(files: PullServer, registry: ModelRegistry) -> Iterator[RunningServer]:
    """A server whose one model was pulled over loopback and is loaded as registry:NAME."""
    pull_model(registry, files.url("/smollm2.gguf"), name="smollm2-pulled")
    settings = Settings(
        server=ServerConfig(port=free_port(), log_level="warning"),
        models=[
            ModelConfig(
                name="pulled", source="registry:smollm2-pulled", context_length=512, max_sequences=2
            )
        ],
        registry=RegistryConfig(path=registry.root),
    )
    running = start_server(settings)
    yield running
    running.stop()


@pytest.fixture
def http(served: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.base_url, headers=served.auth_headers, timeout=60) as client:
        yield client


def _events(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.read()
    assert response.headers["content-type"].startswith("text/event-stream")
    return [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]


def _pull(http: httpx.Client, body: dict[str, Any]) -> list[dict[str, Any]]:
    with http.stream("POST", PULL_PATH, json=body) as response:
        return _events(response)


def test_a_model_pulled_over_loopback_serves_from_registry_name(
    served: RunningServer, http: httpx.Client, model_path: Path
) -> None:
    pulled = served.engine.settings.registry.path / "smollm2-pulled" / "model.gguf"
    assert pulled.read_bytes() == model_path.read_bytes()
    assert [m["id"] for m in http.get("/v1/models").json()["data"]] == ["pulled"]
    reply = http.post(
        "/v1/chat/completions",
        json={"model": "pulled", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["usage"]["completion_tokens"] >= 1


def test_the_route_streams_progress_then_the_manifest(
    files: PullServer, registry: ModelRegistry, http: httpx.Client, model_path: Path
) -> None:
    digest = hashlib.sha256(model_path.read_bytes()).hexdigest()
    events = _pull(http, {"source": files.url("/smollm2.gguf"), "name": "smol", "sha256": digest})
    *progress, last = events
    size = model_path.stat().st_size
    assert len(progress) >= 2 and all(e["status"] == "pulling" for e in progress)
    assert all(e["total"] == size for e in progress)
    completed = [e["completed"] for e in progress]
    assert completed == sorted(completed) and completed[-1] == size
    assert last["status"] == "success"
    assert last["model"] == registry.get("smol").to_dict()
    assert last["model"]["sha256"] == digest and last["model"]["quantization"] == "Q4_1"


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"source": "/etc/passwd", "name": "x"}, 400, "local paths"),
        ({"source": "file:///etc/passwd", "name": "x"}, 400, "local paths"),
        ({"source": "http://127.0.0.1:1/m.gguf", "name": "../x"}, 400, "invalid model name"),
        ({"source": "http://127.0.0.1:1/m.gguf", "name": "a\uff0fb"}, 400, "invalid model name"),
        ({"source": "http://127.0.0.1:1/m.gguf", "sha256": "nope"}, 400, "invalid sha256"),
        ({"source": "s3://bucket/m.gguf"}, 400, "refused model source"),
        ({"source": "http://127.0.0.1:1/m.gguf", "extra": 1}, 400, "extra"),
        ({"source": "http://127.0.0.1:1/m.gguf", "name": "smollm2-pulled"}, 409, "already"),
    ],
)
def test_bad_requests_are_json_errors_before_anything_streams(
    http: httpx.Client, body: dict[str, Any], status: int, fragment: str
) -> None:
    reply = http.post(PULL_PATH, json=body)
    assert reply.status_code == status, reply.text
    assert fragment in json.dumps(reply.json()["error"])


def test_a_failed_pull_ends_with_an_error_event(
    files: PullServer, registry: ModelRegistry, http: httpx.Client
) -> None:
    events = _pull(http, {"source": files.url("/small.gguf"), "name": "bad", "sha256": "0" * 64})
    assert events[-1]["status"] == "error"
    assert events[-1]["error"]["type"] == "pull_failed"
    assert "sha256 mismatch" in events[-1]["error"]["message"]
    assert not registry.exists("bad")
    files.redirects["/to-metadata"] = "http://169.254.169.254/latest/meta-data/"
    events = _pull(http, {"source": files.url("/to-metadata"), "name": "meta"})
    assert events == [
        {
            "status": "error",
            "error": {"type": "pull_failed", "message": events[-1]["error"]["message"]},
        }
    ]
    assert "cloud metadata address" in events[-1]["error"]["message"]


def test_pulling_needs_models_write(served: RunningServer, files: PullServer) -> None:
    admin = PolicyAdmin(served.access.store)
    body = {"source": files.url("/small.gguf"), "name": "scoped"}
    with httpx.Client(base_url=served.base_url, timeout=60) as client:
        assert client.post(PULL_PATH, json=body).status_code == 401
        user = admin.create_key(KeyCreate(name="user", roles=["user"]))["key"]
        denied = client.post(PULL_PATH, json=body, headers={"Authorization": f"Bearer {user}"})
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "insufficient_scope"
        operator = admin.create_key(KeyCreate(name="op", roles=["operator"]))["key"]
        headers = {"Authorization": f"Bearer {operator}"}
        with client.stream("POST", PULL_PATH, json=body, headers=headers) as response:
            assert _events(response)[-1]["status"] == "success"


def test_a_client_that_hangs_up_cancels_the_pull(
    files: PullServer, registry: ModelRegistry, http: httpx.Client
) -> None:
    files.files["/slow.gguf"] = SMALL
    files.slow["/slow.gguf"] = 0.05
    with http.stream("POST", PULL_PATH, json={"source": files.url("/slow.gguf")}) as response:
        for line in response.iter_lines():
            if line.startswith("data: ") and json.loads(line[6:])["completed"] > 0:
                break
    partial, meta = registry.partial_paths("slow")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and "/slow.gguf" not in files.client_gone:
        time.sleep(0.1)
    assert "/slow.gguf" in files.client_gone  # the pull's own download stopped
    time.sleep(0.3)
    assert not registry.exists("slow")
    assert os.listdir(registry.root / ".staging") == []
    assert partial.stat().st_size < len(SMALL) and meta.exists()


def test_on_pulled_gets_the_manifest_and_its_failure_is_the_error_event(
    files: PullServer, tmp_path: Path
) -> None:
    got: list[Manifest] = []
    options = PullOptions(max_download_bytes=10**9)

    async def pull(on_pulled: Any, name: str) -> list[dict[str, Any]]:
        app = falcon.asgi.App()
        app.add_route(PULL_PATH, ModelPullResource(ModelRegistry(tmp_path), options, on_pulled))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            body = {"source": files.url("/small.gguf"), "name": name}
            reply = await client.post(PULL_PATH, json=body)
        return [json.loads(x[6:]) for x in reply.text.splitlines() if x.startswith("data: ")]

    assert asyncio.run(pull(got.append, "one"))[-1]["status"] == "success"
    assert [m.name for m in got] == ["one"] and got[0].sha256 == SMALL_DIGEST

    def broken(manifest: Manifest) -> None:
        raise RuntimeError("engine said no")

    last = asyncio.run(pull(broken, "two"))[-1]
    assert last["status"] == "error"
    assert last["error"]["message"] == "pulled two, but registering it failed: engine said no"


def test_no_hostile_name_over_http_writes_anything(
    served: RunningServer, http: httpx.Client, files: PullServer
) -> None:
    from tests.unit.test_registry_names import HOSTILE_NAMES, _tree

    root = served.engine.settings.registry.path.parent
    before = _tree(root)
    for name in HOSTILE_NAMES:
        reply = http.post(PULL_PATH, json={"source": files.url("/small.gguf"), "name": name})
        assert reply.status_code == 400, (name, reply.text)
        assert reply.json()["error"]["param"] == "name"
    assert _tree(root) == before


def test_a_model_pulled_through_the_route_is_registered_and_loads_on_demand(
    files: PullServer, http: httpx.Client
) -> None:
    events = _pull(http, {"source": files.url("/smollm2.gguf"), "name": "smol-route"})
    assert events[-1]["status"] == "success"
    everything = http.get("/v1/models", params={"all": "true"}).json()["data"]
    assert {m["id"]: m["state"] for m in everything}["smol-route"] == "registered"
    assert "smol-route" not in [m["id"] for m in http.get("/v1/models").json()["data"]]
    body = {"model": "smol-route", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    reply = http.post("/v1/chat/completions", json=body)
    assert reply.status_code == 200, reply.text
    assert "smol-route" in [m["id"] for m in http.get("/v1/models").json()["data"]]


def test_inferctl_pulls_with_progress_and_lists_the_model(
    served: RunningServer, files: PullServer, capsys: pytest.CaptureFixture[str]
) -> None:
    from inferflux_core.cli.inferctl import main as inferctl

    connect = ["--url", served.base_url, "--api-key", served.api_key]
    assert inferctl([*connect, "pull", files.url("/small.gguf"), "--name", "tiny-ctl"]) == 0
    pulled = capsys.readouterr()
    assert "tiny-ctl" in pulled.out + pulled.err
    assert inferctl([*connect, "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    rows = listed if isinstance(listed, list) else listed.get("data", listed)
    assert "tiny-ctl" in json.dumps(rows)
