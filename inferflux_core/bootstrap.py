"""The composition root: settings -> plugin host -> engine -> front doors -> access -> ASGI app.

Everything below receives what it needs from here; nothing reaches up for settings.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import falcon.asgi

from inferflux_core.api import FrontDoors, http_app
from inferflux_core.auth.access import AccessControl
from inferflux_core.config import ResponsesConfig, Settings, load_config
from inferflux_core.engine import Engine
from inferflux_core.frontdoors import (
    ChatDoor,
    CompletionsDoor,
    Driver,
    EmbeddingService,
    ResponsesDoor,
    TokenService,
)
from inferflux_core.frontdoors.openai_responses_store import ResponseStore


def build_engine(
    settings: Settings | None = None,
    *,
    config_file: str | None = None,
    extra_plugins: Iterable[tuple[str, object]] = (),
) -> Engine:
    """The engine for ``settings`` (or the file / environment / defaults), with its plugin
    host; its models are not loaded yet."""
    return Engine(settings or load_config(config_file), extra_plugins=extra_plugins)


def front_doors(engine: Engine, access: AccessControl) -> FrontDoors:
    """Every API adapter over ``engine``, the generating ones behind ``access``'s guardrails."""
    return FrontDoors(
        driver=Driver(engine, access.guardrails),
        chat=ChatDoor(),
        completions=CompletionsDoor(engine),
        embeddings=EmbeddingService(engine),
        tokens=TokenService(engine),
        responses=ResponsesDoor(response_store(engine.settings.responses)),
    )


def response_store(config: ResponsesConfig) -> ResponseStore:
    """The Responses API's store, bounded as ``config`` says."""
    return ResponseStore(
        max_entries=config.store_max_entries,
        max_entries_per_owner=config.store_max_entries_per_owner,
        max_bytes=config.store_max_bytes,
        ttl_seconds=config.store_ttl_seconds,
    )


def create_app(
    engine: Engine, *, access: AccessControl | None = None, settings: Settings | None = None
) -> falcon.asgi.App[Any, Any]:
    """The ASGI app serving ``engine``'s models through the OpenAI API.

    ``settings`` default to the engine's. ``access`` holds the policy store, OIDC, limits,
    guardrails and audit; by default it is built from the settings (an in-memory store with
    no keys: create one with ``PolicyAdmin(access.store).create_key(...)``, or set
    ``auth.mode: disabled``).
    """
    settings = settings or engine.settings
    access = access or AccessControl.from_settings(settings, engine.plugins)
    return http_app(
        engine,
        front_doors(engine, access),
        access,
        settings.server,
        public_metrics=settings.auth.public_metrics,
    )
