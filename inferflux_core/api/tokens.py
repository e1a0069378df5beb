"""``POST /tokenize`` and ``POST /detokenize``, as vLLM serves them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import falcon
import falcon.asgi

from inferflux_core.api.body import encode_json, read_json
from inferflux_core.auth.projects import ProjectScope
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
        projects: ProjectScope | None = None,
    ) -> None:
        self._service = service
        self._handle = handle
        self._max_body_bytes = max_body_bytes
        self._projects = projects or ProjectScope()

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Check the caller may use the model, then answer."""
        body = await read_json(req, self._max_body_bytes)
        model = self._service.model_name(body)
        principal = req.context.exchange.principal
        if model is not None and principal is not None:
            self._projects.require_visible(principal, model)
            principal.require_model(model)
        result = await self._handle(self._service, body)
        # A long token list is encoded in the pool, a slice at a time (see encode_json).
        resp.data = await self._service.pool.run(encode_json, result)
        resp.content_type = falcon.MEDIA_JSON


def add_token_routes(
    app: falcon.asgi.App[Any, Any],
    service: TokenService,
    max_body_bytes: int,
    projects: ProjectScope | None = None,
) -> None:
    """Mount ``/tokenize`` and ``/detokenize`` (another project's model: 404)."""
    for path, handle in (
        ("/tokenize", TokenService.tokenize),
        ("/detokenize", TokenService.detokenize),
    ):
        app.add_route(path, TokenResource(service, handle, max_body_bytes, projects))
