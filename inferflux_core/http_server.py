"""uvicorn as inferflux runs it: keep-alive and header-read timeouts from ``server:``.

uvicorn closes an idle keep-alive connection after ``timeout_keep_alive``, but it has no
limit on how long a client may take to send a request's headers: a client that opens
connections and trickles header bytes (slowloris) holds each one forever. The protocol
class made here closes a connection whose request line and headers are not complete within
``header_timeout_seconds`` of the connection opening, or of the first byte of a later
request on a kept-alive connection. Once the headers are in, the app's own limits apply.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.config import HTTP_PROTOCOLS
from uvicorn.importer import import_from_string

from inferflux_core.config import ServerConfig


class HeaderTimeout:
    """Mixed in before a uvicorn HTTP protocol (h11 or httptools): the header-read timeout."""

    header_timeout: float = 10.0
    _header_timer: asyncio.TimerHandle | None = None
    # Set by the uvicorn protocol this is mixed into.
    cycle: Any
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.Transport) -> None:
        """A new connection: its first request's headers must arrive in time."""
        super().connection_made(transport)  # type: ignore[misc]
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        """Bytes in: the first ones of a request start its clock; complete headers stop it."""
        if self._between_requests() and self._header_timer is None:
            self._arm_header_timer()
        super().data_received(data)  # type: ignore[misc]
        if not self._between_requests():
            self._disarm_header_timer()

    def handle_websocket_upgrade(self, *args: Any) -> None:
        """The headers are in and the connection now belongs to the websocket protocol."""
        self._disarm_header_timer()
        super().handle_websocket_upgrade(*args)  # type: ignore[misc]

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection closed: drop its timer."""
        self._disarm_header_timer()
        super().connection_lost(exc)  # type: ignore[misc]

    def _between_requests(self) -> bool:
        return self.cycle is None or bool(self.cycle.response_complete)

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self._between_requests() and not self.transport.is_closing():
            self.transport.close()


def http_protocol(header_timeout: float, http: str = "auto") -> type[asyncio.Protocol]:
    """uvicorn's ``http`` protocol class (``auto``: httptools if installed, else h11) with
    a header-read timeout of ``header_timeout`` seconds."""
    base: type[asyncio.Protocol] = import_from_string(HTTP_PROTOCOLS[http])
    attributes = {"header_timeout": header_timeout, "__doc__": HeaderTimeout.__doc__}
    return type(f"HeaderTimeout{base.__name__}", (HeaderTimeout, base), attributes)


def uvicorn_config(app: Any, server: ServerConfig, **options: Any) -> uvicorn.Config:
    """The uvicorn configuration serving ``app`` with ``server``'s address and timeouts;
    ``options`` go to ``uvicorn.Config`` as they are."""
    return uvicorn.Config(
        app,
        host=server.host,
        port=server.port,
        http=http_protocol(server.header_timeout_seconds),
        timeout_keep_alive=server.keep_alive_timeout_seconds,
        lifespan="on",
        **options,
    )
