"""``inferflux serve``: load the models, then serve the ASGI app with uvicorn."""

from __future__ import annotations

import logging

import uvicorn

from inferflux_core.api import create_app
from inferflux_core.config import Settings
from inferflux_core.engine import Engine

log = logging.getLogger("inferflux")


def serve(settings: Settings) -> None:
    """Load every model first (a bad model fails here, before the port opens), then serve."""
    engine = Engine(settings)
    engine.load()
    app = create_app(engine)
    server = settings.server
    names = ", ".join(engine.models)
    log.info("serving %s on http://%s:%d/v1", names, server.host, server.port)
    try:
        uvicorn.run(
            app,
            host=server.host,
            port=server.port,
            log_level=server.log_level,
            lifespan="on",
            timeout_graceful_shutdown=5,
        )
    finally:
        engine.unload()
