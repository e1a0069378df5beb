"""Noticing that the client of a non-streaming request hung up, so its generation stops.

falcon reads an HTTP request's ASGI ``receive`` only for the body (and, behind an SSE
response, to watch for ``http.disconnect``): nothing tells a resource that the client of a
plain JSON response went away, and its request would generate to ``max_tokens`` for nobody.
The app gives every HTTP request a :class:`DisconnectWatch` over its ``receive`` (in the ASGI
scope); :func:`unless_disconnected` runs a response's work and cancels it when the client
hangs up, which cancels the engine streams of the request and frees their KV at the next step.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeVar

import falcon.asgi

from inferflux_core.errors import ClientDisconnectedError

#: The key of the request's :class:`DisconnectWatch` in the ASGI scope.
SCOPE_KEY = "inferflux.disconnect"

T = TypeVar("T")
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


class DisconnectWatch:
    """One HTTP request's ASGI ``receive``, remembering an ``http.disconnect`` it passes on."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        #: True once the server said the client hung up (or the response is complete).
        self.disconnected = False

    async def receive(self) -> MutableMapping[str, Any]:
        """The next ASGI message, as the server's ``receive`` gives it."""
        message = await self._receive()
        if message.get("type") == "http.disconnect":
            self.disconnected = True
        return message

    async def wait(self) -> None:
        """Return once the client hung up. Only for after the body was read: what the server
        sends until then is dropped."""
        while not self.disconnected:
            await self.receive()


async def unless_disconnected(req: falcon.asgi.Request, work: Awaitable[T]) -> T:
    """``await work``; if the client hangs up first, cancel it and raise
    :class:`~inferflux_core.errors.ClientDisconnectedError` (499, for the audit line only)."""
    watch = req.scope.get(SCOPE_KEY)
    if not isinstance(watch, DisconnectWatch):
        return await work
    task = asyncio.ensure_future(work)
    hangup = asyncio.ensure_future(watch.wait())
    try:
        await asyncio.wait({task, hangup}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        hangup.cancel()
        if not task.done():
            task.cancel()  # the client left, or this request is being cancelled itself
    if task.cancelled() or not task.done():
        with contextlib.suppress(asyncio.CancelledError):
            await task  # let the work's own cleanup (cancelling its streams) run first
        raise ClientDisconnectedError("the client disconnected before the response was ready")
    return task.result()


class DisconnectAwareApp(falcon.asgi.App[falcon.asgi.Request, falcon.asgi.Response]):
    """falcon's ASGI app, with a :class:`DisconnectWatch` in every HTTP request's scope."""

    async def __call__(  # type: ignore[override]
        self, scope: dict[str, Any], receive: Receive, send: Any
    ) -> None:
        """Serve one ASGI connection scope."""
        if scope.get("type") == "http":
            watch = DisconnectWatch(receive)
            scope[SCOPE_KEY] = watch
            receive = watch.receive
        await super().__call__(scope, receive, send)
