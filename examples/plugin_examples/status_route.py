"""A plugin that adds an HTTP endpoint: ``GET /v1/status``, each model's queue and batch.

``register_routes(app, engine)`` is called once when the ASGI app is built. ``app`` is the
core's :class:`~inferflux_core.contracts.Routes`: a JSON route is an async function of a
:class:`~inferflux_core.contracts.RouteRequest` that returns the body. ``engine`` is an
:class:`~inferflux_core.contracts.EngineView`. Every plugin route is authenticated; ``scope``
says which scope callers need (here ``models:read``, which the ``user`` role has).
"""

from __future__ import annotations

from typing import Any

from inferflux_core.contracts import EngineView, RouteRequest, Routes
from inferflux_core.hookspecs import hookimpl

INFERFLUX_HOOKSPEC_VERSION = 1


@hookimpl
def register_routes(app: Routes, engine: EngineView) -> None:
    """Add ``GET /v1/status``."""

    async def status(request: RouteRequest) -> dict[str, Any]:
        models = {}
        for name in engine.model_names():
            model = engine.status(name)
            models[name] = {
                "running": model.running,
                "waiting": model.waiting,
                "context_length": model.context_length,
                "kind": model.kind,
            }
        return {"object": "status", "models": models}

    app.add("GET", "/v1/status", status, scope="models:read")
