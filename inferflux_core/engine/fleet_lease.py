"""A request's hold on a fleet model: counted in flight from admission until its events end,
and cancellable with a clear error when the model is unloaded under it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from inferflux_core.contracts.generation import InferenceEvent
from inferflux_core.errors import InferfluxError


class LeasedEvents:
    """One request holding a model. :meth:`bind` gives it the request's events; it passes
    them on, releases the model when the iteration ends or is closed (or, never bound, on
    :meth:`release`), and after :meth:`cancel` closes the request (freeing its sequences and
    KV slots) and raises the error to its reader."""

    def __init__(self, release: Callable[[LeasedEvents], None]) -> None:
        self._events: AsyncIterator[InferenceEvent] | None = None
        self._release: Callable[[LeasedEvents], None] | None = release
        self._cancelled: asyncio.Future[InferfluxError] | None = None
        self._error: InferfluxError | None = None
        #: The first event, for callers that read it before iterating (``Primed.first``).
        self.first: Any = None

    def bind(self, events: AsyncIterator[InferenceEvent]) -> LeasedEvents:
        """Hold ``events`` (the request, now submitted); returns self to iterate."""
        self._events = events
        self.first = getattr(events, "first", None)
        return self

    def __aiter__(self) -> LeasedEvents:
        return self

    async def __anext__(self) -> InferenceEvent:
        if self._events is None:
            raise StopAsyncIteration
        if self._error is not None:
            await self.aclose()
            raise self._error
        if self._cancelled is None:
            self._cancelled = asyncio.get_running_loop().create_future()
        step = asyncio.ensure_future(_next(self._events))
        waiting: set[asyncio.Future[Any]] = {step, self._cancelled}
        try:
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # the reader was cancelled (its client went away)
            await _settle(step)  # the request sees the cancellation and ends first
            await self.aclose()
            raise
        if step in done:
            try:
                return step.result()
            except BaseException:
                self.release()
                raise
        await _settle(step)
        error = self._cancelled.result()
        await self.aclose()
        raise error

    def cancel(self, error: InferfluxError) -> None:
        """Stop the request: its reader gets ``error`` at its next event."""
        if self._error is None:
            self._error = error
        if self._cancelled is not None and not self._cancelled.done():
            self._cancelled.set_result(error)

    async def aclose(self) -> None:
        """Close the request and release the model."""
        try:
            aclose = getattr(self._events, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            self.release()

    def release(self) -> None:
        """Release the model (once; later calls do nothing)."""
        release, self._release = self._release, None
        if release is not None:
            release(self)


async def _next(events: AsyncIterator[InferenceEvent]) -> InferenceEvent:
    return await events.__anext__()


async def _settle(step: asyncio.Future[InferenceEvent]) -> None:
    """Cancel ``step`` and wait until it has ended (its exception, if any, is dropped)."""
    step.cancel()
    await asyncio.wait({step})
    if not step.cancelled():
        step.exception()
