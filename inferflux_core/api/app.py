"""The HTTP layer's assembly: the falcon ASGI app over front doors, access control and an engine."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import falcon
import falcon.asgi

from inferflux_core.api.access_middleware import AccessMiddleware
from inferflux_core.api.admin import add_admin_routes
from inferflux_core.api.admin_adapters import add_adapter_routes
from inferflux_core.api.admin_models import add_model_admin_routes, register_pulled
from inferflux_core.api.admin_pull import add_pull_route
from inferflux_core.api.anthropic import add_anthropic_routes
from inferflux_core.api.disconnect import DisconnectAwareApp
from inferflux_core.api.embeddings import EmbeddingResource
from inferflux_core.api.errors import install_error_handlers
from inferflux_core.api.generation import Admission, GenerationResource
from inferflux_core.api.health import HealthResource, MetricsResource, ReadyResource
from inferflux_core.api.metrics_middleware import MetricsMiddleware
from inferflux_core.api.models import ModelsResource
from inferflux_core.api.plugin_routes import PluginRoutes
from inferflux_core.api.responses import add_responses_routes
from inferflux_core.api.tokens import add_token_routes
from inferflux_core.auth.access import AccessControl
from inferflux_core.auth.policy_admin import PolicyAdmin
from inferflux_core.auth.projects import ProjectScope
from inferflux_core.config import ServerConfig
from inferflux_core.contracts.generation import new_request_id
from inferflux_core.engine.fleet import FleetConfigs
from inferflux_core.frontdoors.driver import Driver, GenerationDoor
from inferflux_core.frontdoors.openai_embeddings import EmbeddingService
from inferflux_core.frontdoors.openai_responses import ResponsesDoor
from inferflux_core.frontdoors.tokens import TokenService
from inferflux_core.request_context import bind

if TYPE_CHECKING:
    from inferflux_core.engine import Engine

_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class EngineLifespan:
    """Loads the engine's models at ASGI startup (unless already loaded) and unloads at shutdown."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def process_startup(self, scope: Any, event: Any) -> None:
        """Load models if the embedding program has not; start the fleet's timers."""
        if not self._engine.started:
            await self._engine.start()
        else:
            self._engine.attach()

    async def process_shutdown(self, scope: Any, event: Any) -> None:
        """Unload models."""
        await self._engine.stop()


class RequestIdMiddleware:
    """Give every request an id: the client's ``X-Request-ID`` if it is sane, else a fresh one;
    echoed on the response and used in the audit line and log lines (with the caller's
    ``traceparent``, see :mod:`inferflux_core.request_context`)."""

    async def process_request(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Pick the id."""
        incoming = req.get_header("X-Request-ID")
        valid = incoming is not None and _CLIENT_REQUEST_ID.fullmatch(incoming)
        req.context.request_id = incoming if valid else new_request_id("http")
        # For log lines and spans: the request's id and the caller's W3C trace context.
        bind(req.context.request_id, req.get_header("traceparent"), req.get_header("tracestate"))

    async def process_response(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, resource: Any, ok: bool
    ) -> None:
        """Copy the id to the response."""
        resp.set_header("X-Request-ID", req.context.request_id)


@dataclass(frozen=True, slots=True)
class FrontDoors:
    """The API adapters the app serves, and the one driver the generating ones run on."""

    driver: Driver
    chat: GenerationDoor
    completions: GenerationDoor
    embeddings: EmbeddingService
    tokens: TokenService
    #: The Responses API, with its (in-memory, per-process) store of responses.
    responses: ResponsesDoor = field(default_factory=ResponsesDoor)


def http_app(
    engine: Engine,
    doors: FrontDoors,
    access: AccessControl,
    server: ServerConfig,
    *,
    public_metrics: bool = False,
) -> falcon.asgi.App[Any, Any]:
    """The falcon ASGI app: ``doors`` mounted on their routes behind ``access``; health,
    models and metrics read ``engine``. Built by the composition root
    (:func:`inferflux_core.bootstrap.create_app`)."""
    counting = MetricsMiddleware(engine.metrics.service)
    middleware: list[Any] = [
        EngineLifespan(engine),
        RequestIdMiddleware(),
        counting,
        AccessMiddleware(access, public_metrics=public_metrics),
    ]
    app: falcon.asgi.App[Any, Any] = DisconnectAwareApp(middleware=middleware)
    counting.bind(app)
    app.req_options.strip_url_path_trailing_slash = False
    install_error_handlers(app)
    access.projects = ProjectScope(FleetConfigs(engine.fleet))
    limit = server.max_body_bytes
    pool = engine.pool
    for path, endpoint, door in (
        ("/v1/chat/completions", "chat.completions", doors.chat),
        ("/v1/completions", "completions", doors.completions),
    ):
        admission = Admission(endpoint, limit, access)
        app.add_route(path, GenerationResource(door, doors.driver, admission, pool))
    responses = Admission("responses", limit, access)
    add_responses_routes(app, doors.responses, doors.driver, responses, pool)
    app.add_route(
        "/v1/embeddings",
        EmbeddingResource(doors.embeddings, Admission("embeddings", limit, access)),
    )
    add_token_routes(app, doors.tokens, limit, access.projects)
    add_anthropic_routes(app, engine, doors.driver, access, limit)
    models = ModelsResource(engine, access.projects)
    app.add_route("/v1/models", models)
    app.add_route("/v1/models/{model_id}", models, suffix="one")
    add_admin_routes(app, PolicyAdmin(access.store))
    add_pull_route(app, engine.settings.registry, on_pulled=register_pulled(engine))
    add_model_admin_routes(app, engine)
    add_adapter_routes(app, engine, access.projects)
    health = HealthResource()
    app.add_route("/healthz", health)
    app.add_route("/livez", health)
    app.add_route("/readyz", ReadyResource(engine))
    if server.metrics:
        app.add_route("/metrics", MetricsResource(engine, public=public_metrics))
    routes = PluginRoutes(app, limit)
    engine.plugins.call_each("register_routes", app=routes, engine=engine.view)
    routes.install()
    return app
