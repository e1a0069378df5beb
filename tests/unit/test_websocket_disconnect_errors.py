"""A websocket client that disconnects is not a server error (inferflux_core.api.errors)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import falcon.errors
import pytest
import uvicorn.protocols.utils

from inferflux_core.api import errors


class Request:
    """The request fields the error handler reads (a test double)."""

    method = "GET"
    path = "/ws/echo"


class Socket:
    """A websocket test double that records what the handler sends."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    async def close(self, code: int = 1000) -> None:
        self.sent.append(("close", code))


@pytest.mark.parametrize(
    "gone",
    [uvicorn.protocols.utils.ClientDisconnected(), falcon.errors.WebSocketDisconnected()],
    ids=["uvicorn ClientDisconnected", "falcon WebSocketDisconnected"],
)
def test_a_websocket_client_gone_is_logged_at_debug_only(
    gone: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    socket = Socket()
    with caplog.at_level(logging.DEBUG, logger=errors.log.name):
        asyncio.run(errors.handle_unexpected(Request(), None, gone, {}, socket))  # type: ignore[arg-type]
    assert [r.levelname for r in caplog.records] == ["DEBUG"]
    assert socket.sent == []


def test_another_error_in_a_websocket_handler_is_still_a_logged_bug(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    delivered: list[Any] = []

    async def deliver(req: Any, resp: Any, ws: Any, error: Any) -> None:
        delivered.append(error)

    monkeypatch.setattr(errors, "deliver", deliver)
    with caplog.at_level(logging.DEBUG, logger=errors.log.name):
        asyncio.run(errors.handle_unexpected(Request(), None, OSError("disk full"), {}, Socket()))  # type: ignore[arg-type]
    assert [r.levelname for r in caplog.records] == ["ERROR"]
    assert len(delivered) == 1
