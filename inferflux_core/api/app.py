"""Assembling the falcon ASGI app around an engine."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import falcon
import falcon.asgi

from inferflux_core.api.admin import add_admin_routes
from inferflux_core.api.disconnect import DisconnectAwareApp
from inferflux_core.api.embeddings import EmbeddingResource
from inferflux_core.api.errors import install_error_handlers
from inferflux_core.api.generation import GenerationResource
from inferflux_core.api.health import HealthResource, MetricsResource, ReadyResource
from inferflux_core.api.models import ModelsResource
from inferflux_core.api.tokens import add_token_routes
from inferflux_core.auth.access import AccessControl
from inferflux_core.auth.middleware import AccessMiddleware
from inferflux_core.auth.policy_admin import PolicyAdmin
from inferflux_core.engine.requests import new_request_id
from inferflux_core.serving.tokens import TokenService

if TYPE_CHECKING:
    from inferflux_core.engine import Engine

_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class EngineLifespan:
    """Loads the engine's models at ASGI startup (unless already loaded) and unloads at shutdown."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def process_startup(self, scope: Any, event: Any) -> None:
        """Load models if the embedding program has not."""
        if not self._engine.models:
            await self._engine.start()

    async def process_shutdown(self, scope: Any, event: Any) -> None:
        """Unload models."""
        await self._engine.stop()


class RequestIdMiddleware:
    """Give every request an id: the client's ``X-Request-ID`` if it is sane, else a fresh one;
    echoed on the response and used in the audit line."""

    async def process_request(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Pick the id."""
        incoming = req.get_header("X-Request-ID")
        valid = incoming is not None and _CLIENT_REQUEST_ID.fullmatch(incoming)
        req.context.request_id = incoming if valid else new_request_id("http")

    async def process_response(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, resource: Any, ok: bool
    ) -> None:
        """Copy the id to the response."""
        resp.set_header("X-Request-ID", req.context.request_id)


def create_app(engine: Engine, *, access: AccessControl | None = None) -> falcon.asgi.App[Any, Any]:
    """The ASGI app serving ``engine``'s models through the OpenAI API.

    ``access`` holds the policy store, OIDC, limits, guardrails and audit; by default it is
    built from ``engine.settings`` (an in-memory store with no keys: create one with
    ``PolicyAdmin(access.store).create_key(...)``, or set ``auth.mode: disabled``).
    """
    access = access or AccessControl.from_settings(engine.settings, engine.plugins)
    middleware: list[Any] = [
        EngineLifespan(engine),
        RequestIdMiddleware(),
        AccessMiddleware(access),
    ]
    app: falcon.asgi.App[Any, Any] = DisconnectAwareApp(middleware=middleware)
    app.req_options.strip_url_path_trailing_slash = False
    install_error_handlers(app)
    limit = engine.settings.server.max_body_bytes
    app.add_route(
        "/v1/chat/completions",
        GenerationResource(engine.chat_service, "chat.completions", limit, access),
    )
    app.add_route(
        "/v1/completions",
        GenerationResource(engine.completion_service, "completions", limit, access),
    )
    app.add_route(
        "/v1/embeddings",
        EmbeddingResource(engine.embedding_service, "embeddings", limit, access),
    )
    add_token_routes(app, TokenService(engine), limit)
    models = ModelsResource(engine)
    app.add_route("/v1/models", models)
    app.add_route("/v1/models/{model_id}", models, suffix="one")
    add_admin_routes(app, PolicyAdmin(access.store))
    health = HealthResource()
    app.add_route("/healthz", health)
    app.add_route("/livez", health)
    app.add_route("/readyz", ReadyResource(engine))
    if engine.settings.server.metrics:
        app.add_route(
            "/metrics", MetricsResource(engine, public=engine.settings.auth.public_metrics)
        )
    engine.plugins.call_each("register_routes", app=app, engine=engine)
    return app
