"""The read timeouts mixed into uvicorn's protocol, on a stand-in protocol and a real loop."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from inferflux_core.http_server import ReadTimeouts, http_protocol

TIMEOUT = 0.05


class Transport:
    """Records whether the connection was closed."""

    def __init__(self) -> None:
        self.closed = False

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


@dataclass
class Cycle:
    more_body: bool = True
    response_complete: bool = False


class Protocol:
    """What ReadTimeouts needs of uvicorn's protocol; ``data_received`` runs ``on_data``."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.cycle: Cycle | None = None
        self.transport: Any = None
        self.on_data: Any = lambda data: None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.on_data(data)

    def handle_websocket_upgrade(self, *args: Any) -> None:
        self.cycle = None

    def connection_lost(self, exc: Exception | None) -> None:
        pass


class Timed(ReadTimeouts, Protocol):
    header_timeout = TIMEOUT
    body_timeout = 2 * TIMEOUT


def _run(script: Any) -> Transport:
    async def main() -> Transport:
        protocol = Timed(asyncio.get_running_loop())
        transport = Transport()
        protocol.connection_made(transport)  # type: ignore[arg-type]
        await script(protocol)
        return transport

    return asyncio.run(main())


def test_a_connection_without_headers_is_closed_after_the_header_timeout() -> None:
    async def script(protocol: Timed) -> None:
        protocol.data_received(b"GET / HTTP/1.1\r\n")
        await asyncio.sleep(TIMEOUT * 0.5)
        assert not protocol.transport.closed
        await asyncio.sleep(TIMEOUT * 1.5)

    assert _run(script).closed


def test_complete_headers_start_the_body_clock_and_a_complete_body_stops_it() -> None:
    async def script(protocol: Timed) -> None:
        def headers(data: bytes) -> None:
            protocol.cycle = Cycle(more_body=True)

        protocol.on_data = headers
        protocol.data_received(b"POST / HTTP/1.1\r\n\r\n")
        await asyncio.sleep(TIMEOUT * 1.5)  # past the header timeout, within the body's
        assert not protocol.transport.closed

        def body(data: bytes) -> None:
            assert protocol.cycle is not None
            protocol.cycle.more_body = False

        protocol.on_data = body
        protocol.data_received(b"{}")
        await asyncio.sleep(TIMEOUT * 3)  # the app has the turn: no clock runs

    assert not _run(script).closed


def test_a_stalled_body_is_cut_off() -> None:
    async def script(protocol: Timed) -> None:
        protocol.on_data = lambda data: setattr(protocol, "cycle", Cycle(more_body=True))
        protocol.data_received(b"POST / HTTP/1.1\r\n\r\n{")
        await asyncio.sleep(TIMEOUT * 3)

    assert _run(script).closed


def test_a_websocket_upgrade_stops_every_clock() -> None:
    async def script(protocol: Timed) -> None:
        protocol.on_data = lambda data: protocol.handle_websocket_upgrade()
        protocol.data_received(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n")
        await asyncio.sleep(TIMEOUT * 4)

    assert not _run(script).closed


def test_the_protocol_class_wraps_uvicorns() -> None:
    made = http_protocol(1.5, 30.0, "h11")
    assert made.__name__ == "ReadTimeoutsH11Protocol"
    assert (made.header_timeout, made.body_timeout) == (1.5, 30.0)  # type: ignore[attr-defined]
