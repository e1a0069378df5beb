"""JSON routes added through the typed ``Routes`` facade, and the ``EngineView`` hooks get."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from inferflux_core.auth.policy_admin import KeyCreate, PolicyAdmin
from inferflux_core.config import Settings
from inferflux_core.contracts import (
    ChatMessage,
    EngineView,
    Finish,
    GenerationOptions,
    InferenceRequest,
    RouteReply,
    RouteRequest,
    Routes,
    TextDelta,
)
from inferflux_core.errors import InvalidRequestError
from inferflux_core.hookspecs import hookimpl
from tests.conftest import MODEL_NAME, RunningServer, free_port, start_server


class RoutesPlugin:
    """A test plugin: a JSON echo, a route generating through the engine view, a 201 reply."""

    def __init__(self) -> None:
        self.started_with: list[str] = []
        self.requests: list[RouteRequest] = []

    @hookimpl
    def on_startup(self, engine: EngineView) -> None:
        self.started_with = engine.model_names()

    @hookimpl
    def register_routes(self, app: Routes, engine: EngineView) -> None:
        async def echo(request: RouteRequest) -> Any:
            self.requests.append(request)
            if isinstance(request.body, dict) and request.body.get("refuse"):
                raise InvalidRequestError("refused as asked", param="refuse")
            return {"thing": request.params["thing_id"], "body": request.body, "q": request.query}

        async def created(request: RouteRequest) -> RouteReply:
            return RouteReply({"created": True}, status=201, headers={"X-Made": "yes"})

        async def say(request: RouteRequest) -> dict[str, Any]:
            generated = InferenceRequest(
                MODEL_NAME,
                messages=(ChatMessage("user", str(request.body["prompt"])),),
                options=GenerationOptions(max_tokens=4, temperature=0.0),
            )
            text, reasons = "", []
            async for event in engine.generate(generated):
                if isinstance(event, TextDelta):
                    text += event.text
                elif isinstance(event, Finish):
                    reasons.append(event.reason)
            return {"text": text, "finish": reasons, "status": engine.status(MODEL_NAME).kind}

        app.add("POST", "/v1/things/{thing_id}", echo, scope="inference")
        app.add("GET", "/v1/things/{thing_id}", echo, scope="models:read")
        app.add("PUT", "/v1/made", created, scope="admin")
        app.add("POST", "/v1/say", say, scope="inference")


PLUGIN = RoutesPlugin()


@pytest.fixture(scope="module")
def routes_server() -> Iterator[RunningServer]:
    settings = Settings.model_validate(
        {
            "server": {"port": free_port(), "log_level": "warning"},
            "models": [{"name": MODEL_NAME, "context_length": 512, "max_sequences": 2}],
        }
    )
    running = start_server(settings, extra_plugins=[("routes_plugin", PLUGIN)])
    yield running
    running.stop()


@pytest.fixture(scope="module")
def user_headers(routes_server: RunningServer) -> dict[str, str]:
    key = PolicyAdmin(routes_server.access.store).create_key(KeyCreate(name="u"))["key"]
    return {"Authorization": f"Bearer {key}"}


def test_on_startup_gets_an_engine_view(routes_server: RunningServer) -> None:
    assert PLUGIN.started_with == [MODEL_NAME]


def test_a_json_route_gets_its_params_query_body_and_caller(
    routes_server: RunningServer, user_headers: dict[str, str]
) -> None:
    url = f"{routes_server.base_url}/v1/things/abc?size=3"
    reply = httpx.post(url, json={"a": [1, 2]}, headers=user_headers, timeout=30)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("application/json")
    assert reply.json() == {"thing": "abc", "body": {"a": [1, 2]}, "q": {"size": "3"}}
    seen = PLUGIN.requests[-1]
    assert seen.method == "POST" and seen.key_id is not None and "inference" in seen.scopes
    got = httpx.get(url, headers=user_headers, timeout=30)
    assert got.status_code == 200 and got.json()["body"] is None


def test_a_json_route_needs_its_scope_and_a_key(
    routes_server: RunningServer, user_headers: dict[str, str]
) -> None:
    base = routes_server.base_url
    assert httpx.get(f"{base}/v1/things/x", timeout=30).status_code == 401
    denied = httpx.put(f"{base}/v1/made", headers=user_headers, timeout=30)
    assert denied.status_code == 403 and denied.json()["error"]["type"]
    made = httpx.put(f"{base}/v1/made", headers=routes_server.auth_headers, timeout=30)
    assert made.status_code == 201 and made.json() == {"created": True}
    assert made.headers["x-made"] == "yes"
    undeclared = httpx.delete(f"{base}/v1/made", headers=routes_server.auth_headers, timeout=30)
    assert undeclared.status_code == 405


def test_a_json_route_refuses_bad_bodies_and_raised_errors_in_openai_shape(
    routes_server: RunningServer, user_headers: dict[str, str]
) -> None:
    url = f"{routes_server.base_url}/v1/things/x"
    headers = {**user_headers, "Content-Type": "application/json"}
    broken = httpx.post(url, content=b'{"a": ', headers=headers, timeout=30)
    assert broken.status_code == 400 and broken.json()["error"]["type"] == "invalid_request_error"
    deep = httpx.post(url, content=b"[" * 100 + b"]" * 100, headers=headers, timeout=30)
    assert deep.status_code == 400
    refused = httpx.post(url, json={"refuse": True}, headers=user_headers, timeout=30)
    assert refused.status_code == 400
    assert refused.json()["error"] == {
        "message": "refused as asked",
        "type": "invalid_request_error",
        "param": "refuse",
        "code": None,
    }
    assert routes_server.wait_idle()


def test_a_route_generates_through_the_engine_view(
    routes_server: RunningServer, user_headers: dict[str, str]
) -> None:
    url = f"{routes_server.base_url}/v1/say"
    first = httpx.post(url, json={"prompt": "Say hi"}, headers=user_headers, timeout=60)
    second = httpx.post(url, json={"prompt": "Say hi"}, headers=user_headers, timeout=60)
    assert first.status_code == 200, first.text
    assert first.json()["finish"] == ["length"] and first.json()["status"] == "step"
    assert first.json()["text"] and first.json() == second.json()
    assert routes_server.wait_idle()
