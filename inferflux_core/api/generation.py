"""``POST /v1/chat/completions`` and ``POST /v1/completions``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import falcon.asgi

from inferflux_core.api.body import read_json
from inferflux_core.api.sse import sse_stream


class GenerationResource:
    """One OpenAI generation endpoint: JSON in; a JSON object or an SSE stream out."""

    def __init__(
        self,
        create: Callable[[Any], Awaitable[dict[str, Any]]],
        open_stream: Callable[[Any], AsyncIterator[dict[str, Any]]],
        max_body_bytes: int,
    ) -> None:
        self._create = create
        self._open_stream = open_stream
        self._max_body_bytes = max_body_bytes

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Generate; stream if the body says ``"stream": true``."""
        body = await read_json(req, self._max_body_bytes)
        if isinstance(body, dict) and body.get("stream") is True:
            chunks = self._open_stream(body)
            resp.set_header("Cache-Control", "no-cache")
            resp.set_header("X-Accel-Buffering", "no")
            resp.sse = sse_stream(chunks)
        else:
            resp.media = await self._create(body)
