"""``inferflux serve``: open the policy, load the models, then serve the ASGI app with uvicorn."""

from __future__ import annotations

import contextlib
import logging
import sys

import uvicorn
from uvicorn.config import STARTUP_FAILURE

from inferflux_core.auth.access import AccessControl
from inferflux_core.auth.bootstrap import DEV_KEY_ENV, DevKey, prepare_access
from inferflux_core.bootstrap import build_engine, create_app
from inferflux_core.config import Settings
from inferflux_core.http_server import uvicorn_config
from inferflux_core.logs import uvicorn_log_config

log = logging.getLogger("inferflux")


def serve(settings: Settings) -> None:
    """Open the policy store first (a wrong passphrase fails in a second), then load every
    model (a bad model fails here, before the port opens), then serve."""
    engine = build_engine(settings)
    server = settings.server
    access = AccessControl.from_settings(settings, engine.plugins)
    try:
        dev_key = prepare_access(access, server.host)
        engine.load()
    except BaseException:
        access.store.close()
        raise
    app = create_app(engine, access=access)
    if dev_key is not None:
        announce_dev_key(dev_key, server.host, server.port)
    names = ", ".join(engine.models)
    log.info("serving %s on http://%s:%d/v1", names, server.host, server.port)
    try:
        config = uvicorn_config(
            app,
            server,
            log_level=server.log_level,
            log_config=uvicorn_log_config(settings.logging.format),
            timeout_graceful_shutdown=5,
        )
        http = uvicorn.Server(config)
        with contextlib.suppress(KeyboardInterrupt):
            http.run()
        if not http.started:
            sys.exit(STARTUP_FAILURE)
    finally:
        engine.unload()


def announce_dev_key(dev_key: DevKey, host: str, port: int) -> None:
    """Print the development key once, on stderr only (never through logging)."""
    if dev_key.from_environment:
        print(
            f"inferflux: development API key from {DEV_KEY_ENV} (id {dev_key.key_id}), "
            "admin, for this run",
            file=sys.stderr,
            flush=True,
        )
        return
    print(
        "inferflux: development API key (admin; valid until this server stops):\n"
        f"  {dev_key.key}\n"
        f'  OpenAI(base_url="http://{host}:{port}/v1", api_key="<the key>")  or  '
        f"export {DEV_KEY_ENV}=<the key> for inferctl",
        file=sys.stderr,
        flush=True,
    )
