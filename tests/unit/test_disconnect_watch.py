"""``unless_disconnected``: the work of a request whose client hangs up is cancelled."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from inferflux_core.api.disconnect import SCOPE_KEY, DisconnectWatch, unless_disconnected
from inferflux_core.errors import ClientDisconnectedError


class ServerReceive:
    """An ASGI ``receive`` after the body was read: blocks until the client hangs up."""

    def __init__(self) -> None:
        self.hung_up = asyncio.Event()
        self.calls = 0

    async def __call__(self) -> dict[str, Any]:
        self.calls += 1
        await self.hung_up.wait()
        return {"type": "http.disconnect"}


def request_with(receive: ServerReceive) -> Any:
    return SimpleNamespace(scope={SCOPE_KEY: DisconnectWatch(receive)})


def test_a_hang_up_cancels_the_work_and_raises_client_disconnected() -> None:
    async def scenario() -> bool:
        receive = ServerReceive()
        cancelled = asyncio.Event()

        async def work() -> str:
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                cancelled.set()
                raise
            return "never"

        asyncio.get_running_loop().call_later(0.05, receive.hung_up.set)
        with pytest.raises(ClientDisconnectedError) as caught:
            await unless_disconnected(request_with(receive), work())
        assert caught.value.status == 499 and caught.value.code == "client_disconnected"
        return cancelled.is_set()

    assert asyncio.run(scenario()), "the work was not cancelled"


def test_work_that_finishes_first_returns_its_result_and_stops_watching() -> None:
    async def scenario() -> tuple[str, bool]:
        receive = ServerReceive()
        request = request_with(receive)

        async def work() -> str:
            await asyncio.sleep(0.01)
            return "done"

        result = await unless_disconnected(request, work())
        receive.hung_up.set()
        await asyncio.sleep(0.05)
        # Nobody reads ``receive`` any more: the watch never saw the hang-up.
        return result, request.scope[SCOPE_KEY].disconnected

    assert asyncio.run(scenario()) == ("done", False)


def test_work_that_fails_raises_its_own_error() -> None:
    async def work() -> str:
        raise ValueError("bad")

    with pytest.raises(ValueError, match="bad"):
        asyncio.run(unless_disconnected(request_with(ServerReceive()), work()))


def test_without_a_watch_the_work_just_runs() -> None:
    async def work() -> str:
        return "plain"

    assert asyncio.run(unless_disconnected(SimpleNamespace(scope={}), work())) == "plain"  # type: ignore[arg-type]
