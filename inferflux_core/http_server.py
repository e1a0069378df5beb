"""uvicorn as inferflux runs it: keep-alive, header-read and body-read timeouts from ``server:``.

uvicorn closes an idle keep-alive connection after ``timeout_keep_alive``, but it has no
limit on how long a client may take to send a request: a client that opens connections and
trickles header bytes (slowloris), or sends headers and then a body byte now and then,
holds each one forever. The protocol class made here closes a connection whose request line
and headers are not complete within ``header_timeout_seconds`` (of the connection opening,
or of the first byte of a later request on a kept-alive connection), or whose body is not
complete within ``body_timeout_seconds`` of its headers. A request cut off in its body is
seen by the app as a client that went away.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import uvicorn
from uvicorn.config import HTTP_PROTOCOLS
from uvicorn.importer import import_from_string

from inferflux_core.config import ServerConfig

Phase = Literal["headers", "body"]


class ReadTimeouts:
    """Mixed in before a uvicorn HTTP protocol (h11 or httptools): the read timeouts."""

    header_timeout: float = 5.0
    body_timeout: float = 60.0
    _timer: asyncio.TimerHandle | None = None
    _timed: Phase | None = None
    _upgraded = False
    # Set by the uvicorn protocol this is mixed into.
    cycle: Any
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.Transport) -> None:
        """A new connection: its first request's headers must arrive in time."""
        super().connection_made(transport)  # type: ignore[misc]
        self._time("headers")

    def data_received(self, data: bytes) -> None:
        """Bytes in: the first ones of a request start the header clock; complete headers
        start the body clock; a complete body stops it."""
        if self._phase() == "headers" and self._timed is None:
            self._time("headers")
        super().data_received(data)  # type: ignore[misc]
        phase = self._phase()
        if phase != self._timed:
            self._time(phase)

    def handle_websocket_upgrade(self, *args: Any) -> None:
        """The headers are in and the connection now belongs to the websocket protocol."""
        self._upgraded = True
        self._time(None)
        super().handle_websocket_upgrade(*args)  # type: ignore[misc]

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection closed: drop its timer."""
        self._time(None)
        super().connection_lost(exc)  # type: ignore[misc]

    def _phase(self) -> Phase | None:
        """What the connection waits for from the client; None while the app (or, after an
        upgrade, the websocket protocol) has the turn."""
        if self._upgraded:
            return None
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            return "headers"
        return "body" if cycle.more_body else None

    def _time(self, phase: Phase | None) -> None:
        """Replace the running timer by one for ``phase`` (none for None)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timed = phase
        if phase is not None:
            delay = self.header_timeout if phase == "headers" else self.body_timeout
            self._timer = self.loop.call_later(delay, self._expired, phase)

    def _expired(self, phase: Phase) -> None:
        self._timer = None
        self._timed = None
        if self._phase() == phase and not self.transport.is_closing():
            self.transport.close()


def http_protocol(
    header_timeout: float, body_timeout: float, http: str = "auto"
) -> type[asyncio.Protocol]:
    """uvicorn's ``http`` protocol class (``auto``: httptools if installed, else h11) with
    the header-read and body-read timeouts, in seconds."""
    base: type[asyncio.Protocol] = import_from_string(HTTP_PROTOCOLS[http])
    attributes = {
        "header_timeout": header_timeout,
        "body_timeout": body_timeout,
        "__doc__": ReadTimeouts.__doc__,
    }
    return type(f"ReadTimeouts{base.__name__}", (ReadTimeouts, base), attributes)


def uvicorn_config(app: Any, server: ServerConfig, **options: Any) -> uvicorn.Config:
    """The uvicorn configuration serving ``app`` with ``server``'s address and timeouts;
    ``options`` go to ``uvicorn.Config`` as they are."""
    return uvicorn.Config(
        app,
        host=server.host,
        port=server.port,
        http=http_protocol(server.header_timeout_seconds, server.body_timeout_seconds),
        timeout_keep_alive=server.keep_alive_timeout_seconds,
        lifespan="on",
        **options,
    )
