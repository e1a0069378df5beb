"""A plugin that adds an HTTP endpoint: ``GET /v1/status``, each model's queue and batch.

``register_routes(app, engine)`` is called once when the ASGI app is built; the resource is a
plain falcon class. Every plugin route is authenticated; ``scopes`` says which scope each
method needs (here ``models:read``, which the ``user`` role has).
"""

from __future__ import annotations

from typing import Any

import falcon.asgi

from inferflux_core.hookspecs import hookimpl

INFERFLUX_HOOKSPEC_VERSION = 1


class StatusResource:
    """``GET /v1/status``: for every loaded model, requests running and waiting."""

    scopes = {"GET": "models:read"}

    def __init__(self, engine: Any) -> None:
        self._engine = engine

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """The status document."""
        models = {
            name: {
                "running": model.runner.scheduler.running_count,
                "waiting": model.runner.scheduler.waiting_count,
                "context_length": model.backend.info.context_length,
            }
            for name, model in self._engine.models.items()
        }
        resp.media = {"object": "status", "models": models}


@hookimpl
def register_routes(app: falcon.asgi.App, engine: Any) -> None:
    """Add ``GET /v1/status``."""
    app.add_route("/v1/status", StatusResource(engine))
