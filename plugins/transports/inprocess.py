"""An in-process KV transport: a bounded queue between two engines in one process."""

from __future__ import annotations

import asyncio
from collections import deque

from pydantic import Field

from inferflux_core.contracts import KVBlock, KVTransport, PluginOptions
from inferflux_core.errors import KVTransportClosedError
from inferflux_core.hookspecs import hookimpl

#: The version of inferflux's hook contract this plugin was written against.
INFERFLUX_HOOKSPEC_VERSION = 1


class InProcessOptions(PluginOptions):
    """Options of the ``inprocess`` transport."""

    max_pending: int = Field(
        8, ge=1, description="blocks sent and not yet received before `send` waits"
    )


class InProcessTransport(KVTransport):
    """Blocks in order through a queue of at most ``max_pending`` blocks (default 8)."""

    options_model = InProcessOptions

    def __init__(self, *, max_pending: int = 8) -> None:
        if isinstance(max_pending, bool) or not isinstance(max_pending, int) or max_pending < 1:
            raise TypeError(f"max_pending must be a positive integer, not {max_pending!r}")
        super().__init__(max_pending=max_pending)
        self._max_pending = max_pending
        self._blocks: deque[KVBlock] = deque()
        self._changed = asyncio.Condition()
        self._closed = False

    async def send(self, block: KVBlock) -> None:
        """Enqueue; waits while ``max_pending`` blocks are undelivered."""
        async with self._changed:
            await self._changed.wait_for(
                lambda: self._closed or len(self._blocks) < self._max_pending
            )
            if self._closed:
                raise KVTransportClosedError("the KV transport is closed; the block was not sent")
            self._blocks.append(block)
            self._changed.notify_all()

    async def receive(self) -> KVBlock:
        """The oldest undelivered block; once closed and drained, KVTransportClosedError."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._closed or bool(self._blocks))
            if not self._blocks:
                raise KVTransportClosedError("the KV transport is closed and holds no block")
            block = self._blocks.popleft()
            self._changed.notify_all()
            return block

    async def close(self) -> None:
        """Refuse further sends and wake everyone waiting."""
        async with self._changed:
            self._closed = True
            self._changed.notify_all()


@hookimpl
def register_kv_transports() -> dict[str, type[KVTransport]]:
    """The in-process transport, as ``inprocess``."""
    return {"inprocess": InProcessTransport}
