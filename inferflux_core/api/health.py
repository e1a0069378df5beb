"""Liveness, readiness and metrics: the public routes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import falcon
import falcon.asgi
from prometheus_client import CONTENT_TYPE_LATEST

from inferflux_core.auth.scopes import METRICS_READ
from inferflux_core.engine.request_model import RequestModel

if TYPE_CHECKING:
    from inferflux_core.engine import Engine


class HealthResource:
    """``/healthz`` and ``/livez``: the process answers."""

    public = True

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """200 while the server runs."""
        resp.media = {"status": "ok"}


class ReadyResource:
    """``/readyz``: every ``load: startup`` model is loaded, no loaded model has failed, and
    every request-level backend says it is ready (``on_demand`` models do not count)."""

    public = True

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """200 when ready; 503 while loading, or naming each failed model and why."""
        wanted = self._engine.fleet.startup_models()
        missing = [name for name in wanted if name not in self._engine.models]
        failed = [
            {"model": model.name, "reason": model.failure}
            for model in list(self._engine.models.values())
            if model.failure is not None
        ]
        if missing:
            resp.status = falcon.HTTP_503
            resp.media = {"status": "loading", "missing": missing}
        elif failed:
            resp.status = falcon.HTTP_503
            resp.media = {"status": "failed", "models": wanted, "failed": failed}
        elif unready := await self._unready():
            resp.status = falcon.HTTP_503
            resp.media = {"status": "unavailable", "models": wanted, "unavailable": unready}
        else:
            resp.media = {"status": "ready", "models": wanted}

    async def _unready(self) -> list[dict[str, str | None]]:
        """Request-level models whose backend says it cannot take requests now."""
        out = []
        for model in list(self._engine.models.values()):
            if isinstance(model, RequestModel):
                readiness = await model.runner.readiness()
                if not readiness.ready:
                    out.append({"model": model.name, "reason": readiness.reason})
        return out


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
