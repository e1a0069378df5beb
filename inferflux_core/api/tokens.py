"""``POST /tokenize`` and ``POST /detokenize``, as vLLM serves them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import falcon
import falcon.asgi

from inferflux_core.api.body import encode_json, read_json
from inferflux_core.auth.scopes import INFERENCE
from inferflux_core.frontdoors.tokens import TokenService


class TokenResource:
    """One of the token endpoints: a JSON body in, a JSON object out; no generation."""

    scopes = {"POST": INFERENCE}

    def __init__(
        self,
        service: TokenService,
        handle: Callable[[TokenService, Any], Awaitable[dict[str, Any]]],
        max_body_bytes: int,
    ) -> None:
        self._service = service
        self._handle = handle
        self._max_body_bytes = max_body_bytes

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Check the caller may use the model, then answer."""
        body = await read_json(req, self._max_body_bytes)
        model = self._service.model_name(body)
        principal = req.context.exchange.principal
        if model is not None and principal is not None:
            principal.require_model(model)
        result = await self._handle(self._service, body)
        # A long token list is encoded in the pool, a slice at a time (see encode_json).
        resp.data = await self._service.pool.run(encode_json, result)
        resp.content_type = falcon.MEDIA_JSON


def add_token_routes(
    app: falcon.asgi.App[Any, Any], service: TokenService, max_body_bytes: int
) -> None:
    """Mount ``/tokenize`` and ``/detokenize``."""
    app.add_route("/tokenize", TokenResource(service, TokenService.tokenize, max_body_bytes))
    app.add_route("/detokenize", TokenResource(service, TokenService.detokenize, max_body_bytes))
