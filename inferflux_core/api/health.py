"""Liveness, readiness and metrics: the public routes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import falcon
import falcon.asgi
from prometheus_client import CONTENT_TYPE_LATEST

from inferflux_core.auth.scopes import METRICS_READ

if TYPE_CHECKING:
    from inferflux_core.engine import Engine


class HealthResource:
    """``/healthz`` and ``/livez``: the process answers."""

    public = True

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """200 while the server runs."""
        resp.media = {"status": "ok"}


class ReadyResource:
    """``/readyz``: every configured model is loaded."""

    public = True

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """200 when ready, 503 otherwise."""
        wanted = [m.name for m in self._engine.settings.models]
        missing = [name for name in wanted if name not in self._engine.models]
        if missing:
            resp.status = falcon.HTTP_503
            resp.media = {"status": "loading", "missing": missing}
        else:
            resp.media = {"status": "ready", "models": wanted}


class MetricsResource:
    """``/metrics`` in Prometheus' text format: public, or for the ``metrics:read`` scope."""

    scopes = {"GET": METRICS_READ}

    def __init__(self, engine: Engine, *, public: bool = False) -> None:
        self._engine = engine
        self.public = public

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """The engine's metrics."""
        resp.content_type = CONTENT_TYPE_LATEST
        resp.data = self._engine.metrics.render()
