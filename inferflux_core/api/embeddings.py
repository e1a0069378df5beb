"""``POST /v1/embeddings``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import falcon
import falcon.asgi

from inferflux_core.api.body import encode_json
from inferflux_core.api.disconnect import unless_disconnected
from inferflux_core.auth.scopes import INFERENCE

if TYPE_CHECKING:
    from inferflux_core.api.generation import Admission
    from inferflux_core.frontdoors.openai_embeddings import EmbeddingService


class EmbeddingResource:
    """OpenAI embeddings: JSON in, one JSON list of vectors out (never a stream).

    Admission is the generation routes': the ``inference`` scope, request and token rate
    limits, the caller's model allow-list, the guardrails on the input text, and the audit line.
    """

    scopes = {"POST": INFERENCE}

    def __init__(self, service: EmbeddingService, admission: Admission) -> None:
        self._service = service
        self._admission = admission

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Embed the body's inputs."""
        body, exchange = await self._admission.body(req)
        text = await self._service.input_text(body) if self._admission.needs_text else None
        await self._admission.check_input(exchange, text)
        result = await unless_disconnected(req, self._service.create(body, exchange.usage))
        # Thousands of vectors are encoded in the pool, one at a time (see encode_json).
        resp.data = await self._service.pool.run(encode_json, result)
        resp.content_type = falcon.MEDIA_JSON
