"""``POST /v1/admin/models/{name}/adapters``: register a LoRA adapter with a serving model.

Scope ``models:write``. The body is one ``models[].adapters`` entry,
``{"name", "source", "scale"?, "project"?}``; the answer (201) is the adapter's
``/v1/models`` object. A caller with a project registers adapters of its project only, on
models it sees (another project's model is a 404, as everywhere). See docs/adapters.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import falcon
import falcon.asgi

from inferflux_core.api.body import read_json
from inferflux_core.api.models import adapter_object
from inferflux_core.auth.projects import ProjectScope, restricted
from inferflux_core.auth.scopes import MODELS_WRITE
from inferflux_core.config import AdapterConfig
from inferflux_core.errors import PermissionDeniedError
from inferflux_core.protocol.common import parse_body

if TYPE_CHECKING:
    from inferflux_core.engine import Engine

ADAPTER_BODY_LIMIT = 64 * 1024


class AdaptersResource:
    """A model's adapters, added at runtime."""

    scopes = {"POST": MODELS_WRITE}

    def __init__(self, engine: Engine, projects: ProjectScope) -> None:
        self._engine = engine
        self._projects = projects

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, name: str
    ) -> None:
        """Load the adapter the body describes into model ``name``."""
        principal = req.context.exchange.principal
        self._projects.require_visible(principal, name)
        adapter = parse_body(AdapterConfig, await read_json(req, ADAPTER_BODY_LIMIT))
        if restricted(principal) and adapter.project != principal.project:
            raise PermissionDeniedError(
                f"project: this credential registers adapters of its project "
                f"{principal.project!r} only",
                param="project",
                code="exceeds_own_grants",
            )
        await self._engine.add_adapter(name, adapter)
        resp.status = falcon.HTTP_201
        resp.media = adapter_object(self._engine.fleet.entry(name), adapter)


def add_adapter_routes(
    app: falcon.asgi.App[Any, Any], engine: Engine, projects: ProjectScope
) -> None:
    """Mount ``/v1/admin/models/{name}/adapters``."""
    app.add_route("/v1/admin/models/{name}/adapters", AdaptersResource(engine, projects))
