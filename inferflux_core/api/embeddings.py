"""``POST /v1/embeddings``."""

from __future__ import annotations

import falcon.asgi

from inferflux_core.api.disconnect import unless_disconnected
from inferflux_core.api.generation import GenerationResource


class EmbeddingResource(GenerationResource):
    """OpenAI embeddings: JSON in, one JSON list of vectors out (never a stream).

    Admission is the generation routes': the ``inference`` scope, request and token rate
    limits, the caller's model allow-list, the guardrails on the input text, and the audit line.
    """

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Embed the body's inputs."""
        body, exchange = await self.admit(req)
        resp.media = await unless_disconnected(req, self._service.create(body, exchange.usage))
