"""``POST /v1/messages`` and ``POST /v1/messages/count_tokens``: Anthropic's Messages API.

Messages runs on the same :class:`~inferflux_core.api.generation.GenerationResource` as chat
completions (scope ``inference``, the model allow-list, priority caps, guardrails on the
prompt and on streamed text and tool input, token charging, audit), with Anthropic's stream
events; its errors are in Anthropic's shape (:mod:`inferflux_core.api.anthropic_errors`).
Both answer with a ``request-id`` header, which Anthropic's SDKs read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import falcon.asgi

from inferflux_core.api.anthropic_errors import ANTHROPIC_PREFIX, ANTHROPIC_SSE
from inferflux_core.api.generation import Admission, GenerationResource
from inferflux_core.auth.scopes import INFERENCE
from inferflux_core.frontdoors.anthropic_messages import MessagesDoor
from inferflux_core.frontdoors.anthropic_tokens import CountTokensService

if TYPE_CHECKING:
    from inferflux_core.auth.access import AccessControl
    from inferflux_core.engine import Engine
    from inferflux_core.frontdoors.driver import Driver


def _request_id_header(req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
    resp.set_header("request-id", req.context.request_id)


class MessagesResource(GenerationResource):
    """``POST /v1/messages``: a ``message``, or its stream of events."""

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Generate; stream if the body says ``"stream": true``."""
        _request_id_header(req, resp)
        await super().on_post(req, resp)


class CountTokensResource:
    """``POST /v1/messages/count_tokens``: ``{"input_tokens": N}``, nothing generated."""

    scopes = {"POST": INFERENCE}

    def __init__(self, service: CountTokensService, admission: Admission) -> None:
        self._service = service
        self._admission = admission

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Check the caller may use the model, then count."""
        _request_id_header(req, resp)
        body, _ = await self._admission.body(req)
        resp.media = await self._service.count(body)


def add_anthropic_routes(
    app: falcon.asgi.App[Any, Any],
    engine: Engine,
    driver: Driver,
    access: AccessControl,
    max_body_bytes: int,
) -> None:
    """Mount the Messages API on ``app``, its generation on ``driver``."""
    messages = MessagesResource(
        MessagesDoor(),
        driver,
        Admission("messages", max_body_bytes, access),
        engine.pool,
        wire=ANTHROPIC_SSE,
    )
    app.add_route(ANTHROPIC_PREFIX, messages)
    counting = CountTokensResource(
        CountTokensService(engine), Admission("messages.count_tokens", max_body_bytes, access)
    )
    app.add_route(f"{ANTHROPIC_PREFIX}/count_tokens", counting)
