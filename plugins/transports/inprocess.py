"""An in-process KV transport: a bounded queue between two engines in one process."""

from __future__ import annotations

import asyncio
from typing import Any

from inferflux_core.contracts import KVBlock, KVTransport
from inferflux_core.hookspecs import hookimpl

#: The version of inferflux's hook contract this plugin was written against.
INFERFLUX_HOOKSPEC_VERSION = 1


class InProcessTransport(KVTransport):
    """Blocks in order through an ``asyncio.Queue`` of ``max_pending`` blocks (default 8)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._queue: asyncio.Queue[KVBlock] = asyncio.Queue(int(options.get("max_pending", 8)))

    async def send(self, block: KVBlock) -> None:
        """Enqueue; waits while ``max_pending`` blocks are undelivered."""
        await self._queue.put(block)

    async def receive(self) -> KVBlock:
        """The oldest undelivered block."""
        return await self._queue.get()


@hookimpl
def register_kv_transports() -> dict[str, type[KVTransport]]:
    """The in-process transport, as ``inprocess``."""
    return {"inprocess": InProcessTransport}
