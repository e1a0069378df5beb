"""Assembling the falcon ASGI app around an engine."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import falcon
import falcon.asgi

from inferflux_core.api.errors import install_error_handlers
from inferflux_core.api.generation import GenerationResource
from inferflux_core.api.health import HealthResource, MetricsResource, ReadyResource
from inferflux_core.api.models import ModelsResource

if TYPE_CHECKING:
    from inferflux_core.engine import Engine


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
    """Echo ``X-Request-ID`` (or set a fresh one) on every response."""

    async def process_response(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, resource: Any, ok: bool
    ) -> None:
        """Copy the id to the response."""
        from inferflux_core.engine.requests import new_request_id

        incoming = req.get_header("X-Request-ID")
        rid = incoming if incoming and len(incoming) <= 128 else new_request_id("http")
        resp.set_header("X-Request-ID", rid)


def create_app(engine: Engine) -> falcon.asgi.App:
    """The ASGI app serving ``engine``'s models through the OpenAI API."""
    app = falcon.asgi.App(middleware=[EngineLifespan(engine), RequestIdMiddleware()])
    app.req_options.strip_url_path_trailing_slash = False
    install_error_handlers(app)
    limit = engine.settings.server.max_body_bytes
    app.add_route(
        "/v1/chat/completions",
        GenerationResource(engine.chat, engine.stream_chat, limit),
    )
    app.add_route(
        "/v1/completions",
        GenerationResource(engine.complete, engine.stream_complete, limit),
    )
    models = ModelsResource(engine)
    app.add_route("/v1/models", models)
    app.add_route("/v1/models/{model_id}", models, suffix="one")
    health = HealthResource()
    app.add_route("/healthz", health)
    app.add_route("/livez", health)
    app.add_route("/readyz", ReadyResource(engine))
    if engine.settings.server.metrics:
        app.add_route("/metrics", MetricsResource(engine))
    engine.plugins.hook.register_routes(app=app, engine=engine)
    return app
