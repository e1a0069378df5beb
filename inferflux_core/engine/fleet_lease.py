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
    KV slots) and raises the error to its reader.

    A reader waiting for an event when :meth:`cancel` comes is interrupted by cancelling its
    task (the request sees an ordinary cancellation and cleans up), and the cancellation is
    turned into the error: no task per event, so the wrapper costs nearly nothing per token.
    """

    def __init__(self, release: Callable[[LeasedEvents], None]) -> None:
        self._events: AsyncIterator[InferenceEvent] | None = None
        self._release: Callable[[LeasedEvents], None] | None = release
        self._error: InferfluxError | None = None
        self._reader: asyncio.Task[Any] | None = None
        self._interrupted = False
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
        self._reader = asyncio.current_task()
        try:
            return await self._events.__anext__()
        except asyncio.CancelledError:
            if not self._interrupted or self._error is None:
                await self.aclose()
                raise
            reader = asyncio.current_task()
            if reader is not None:
                reader.uncancel()
            await self.aclose()
            raise self._error from None
        except BaseException:
            self.release()
            raise
        finally:
            self._reader = None

    def cancel(self, error: InferfluxError) -> None:
        """Stop the request: its reader gets ``error`` now if it waits for an event, else at
        its next one."""
        if self._error is None:
            self._error = error
        if self._reader is not None and not self._interrupted:
            self._interrupted = True
            self._reader.cancel()

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
