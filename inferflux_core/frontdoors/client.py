"""A thin OpenAI-dict convenience over an engine, for programs that embed it.

The same front doors and driver the HTTP server uses, without HTTP, policy or guardrails:
an OpenAI request body in, an OpenAI response object (or chunks) out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from inferflux_core.engine import Engine
from inferflux_core.frontdoors.driver import Driver, GenerationDoor
from inferflux_core.frontdoors.openai_chat import ChatDoor
from inferflux_core.frontdoors.openai_completions import CompletionsDoor
from inferflux_core.frontdoors.openai_embeddings import EmbeddingService
from inferflux_core.frontdoors.usage import Usage


class OpenAIDicts:
    """OpenAI request bodies in, OpenAI response objects out, on ``engine``.

    >>> openai = OpenAIDicts(engine)
    >>> reply = await openai.chat({"model": "smollm2-135m-instruct", "messages": [...]})
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._driver = Driver(engine)
        self._chat = ChatDoor()
        self._completions = CompletionsDoor(engine)
        self._embeddings = EmbeddingService(engine)

    async def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """A ``chat.completion`` for a chat request body."""
        return await self._whole(self._chat, body)

    async def stream_chat(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """``chat.completion.chunk`` objects for a chat request body."""
        async for chunk in await self._stream(self._chat, body):
            yield chunk

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        """A ``text_completion`` for a completions request body."""
        return await self._whole(self._completions, body)

    async def stream_complete(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Text-completion chunks for a completions request body."""
        async for chunk in await self._stream(self._completions, body):
            yield chunk

    async def embed(self, body: dict[str, Any]) -> dict[str, Any]:
        """OpenAI embeddings (``{"object": "list", "data": [...]}``) for a request body."""
        return await self._embeddings.create(body)

    async def _whole(self, door: GenerationDoor, body: dict[str, Any]) -> dict[str, Any]:
        call = await self.engine.pool.run(door.parse, {**body, "stream": False})
        result, _ = await self._driver.whole(door, call, Usage())
        return result

    async def _stream(
        self, door: GenerationDoor, body: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        call = await self.engine.pool.run(door.parse, {**body, "stream": True})
        return await self._driver.stream(door, call, Usage())
