"""Websocket routes from a plugin are authenticated like every other route, before accept."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import falcon.asgi
import httpx
import pytest
import websockets
from websockets.asyncio.client import connect

from inferflux_core.auth.policy_admin import KeyCreate, PolicyAdmin
from inferflux_core.config import Settings
from inferflux_core.hookspecs import hookimpl
from tests.conftest import MODEL_NAME, RunningServer, free_port, start_server


class Echo:
    """Echoes one message; counts the sockets it accepted."""

    def __init__(self, scopes: dict[str, str] | None = None) -> None:
        if scopes is not None:
            self.scopes = scopes
        self.accepted = 0

    async def on_websocket(self, req: falcon.asgi.Request, ws: falcon.asgi.WebSocket) -> None:
        await ws.accept()
        self.accepted += 1
        await ws.send_text(await ws.receive_text())
        await ws.close()


class WebsocketPlugin:
    def __init__(self) -> None:
        self.admin_only = Echo()
        self.for_users = Echo({"WEBSOCKET": "inference"})
        self.http_scopes_only = Echo({"GET": "inference"})

    @hookimpl
    def register_routes(self, app: Any, engine: Any) -> None:
        app.add_route("/ws/echo", self.admin_only)
        app.add_route("/ws/user", self.for_users)
        app.add_route("/ws/http-scopes", self.http_scopes_only)


PLUGIN = WebsocketPlugin()


@pytest.fixture(scope="module")
def ws_server() -> Iterator[RunningServer]:
    settings = Settings.model_validate(
        {
            "server": {"port": free_port(), "log_level": "warning"},
            "models": [{"name": MODEL_NAME, "context_length": 512, "max_sequences": 2}],
        }
    )
    running = start_server(settings, extra_plugins=[("websocket_plugin", PLUGIN)])
    yield running
    running.stop()


def _user_key(server: RunningServer) -> str:
    return str(PolicyAdmin(server.access.store).create_key(KeyCreate(name="u"))["key"])


async def _echo(url: str, authorization: str | None) -> str:
    headers = {"Authorization": authorization} if authorization else {}
    async with connect(url, additional_headers=headers, open_timeout=10) as socket:
        await socket.send("ping")
        return str(await asyncio.wait_for(socket.recv(), 10))


def _denied(url: str, authorization: str | None) -> int:
    with pytest.raises(websockets.exceptions.InvalidStatus) as caught:
        asyncio.run(_echo(url, authorization))
    return caught.value.response.status_code


def _ws(server: RunningServer, path: str) -> str:
    return server.base_url.replace("http://", "ws://") + path


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer not-a-key",
        "Bearer ifx-0123456789abcdef.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "Basic x",
    ],
)
def test_a_websocket_without_a_valid_credential_is_denied_before_accept(
    ws_server: RunningServer, authorization: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    before = PLUGIN.admin_only.accepted
    assert _denied(_ws(ws_server, "/ws/echo"), authorization) == 403
    assert PLUGIN.admin_only.accepted == before
    assert _echo_ok(ws_server, "/ws/echo", f"Bearer {ws_server.api_key}")
    assert ws_server.wait_idle()
    assert not [r for r in caplog.records if r.exc_info or r.levelname == "ERROR"]


def _echo_ok(server: RunningServer, path: str, authorization: str) -> bool:
    return asyncio.run(_echo(_ws(server, path), authorization)) == "ping"


def test_a_websocket_needs_the_scope_its_route_declares_for_websockets(
    ws_server: RunningServer,
) -> None:
    user = f"Bearer {_user_key(ws_server)}"
    admin = f"Bearer {ws_server.api_key}"
    assert _denied(_ws(ws_server, "/ws/echo"), user) == 403  # no scopes declared: admin only
    assert _denied(_ws(ws_server, "/ws/http-scopes"), user) == 403  # GET's scope is not enough
    assert _echo_ok(ws_server, "/ws/user", user)
    assert _echo_ok(ws_server, "/ws/http-scopes", admin)
    assert PLUGIN.http_scopes_only.accepted == 1
    with httpx.Client(base_url=ws_server.base_url, timeout=60) as http:
        body = {"model": MODEL_NAME, "prompt": "Hello", "max_tokens": 2}
        reply = http.post("/v1/completions", json=body, headers={"Authorization": user})
        assert reply.status_code == 200
    assert ws_server.wait_idle()


def test_a_websocket_on_an_odd_path_is_denied(ws_server: RunningServer) -> None:
    assert _denied(_ws(ws_server, "//ws/echo"), f"Bearer {ws_server.api_key}") == 403
    assert _denied(_ws(ws_server, "/ws/nowhere"), None) == 403
    assert _echo_ok(ws_server, "/ws/echo", f"Bearer {ws_server.api_key}")
    assert ws_server.wait_idle()
