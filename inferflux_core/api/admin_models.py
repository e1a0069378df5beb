"""``/v1/admin/models``: the fleet's models at runtime (``models:read`` to read,
``models:write`` to change; docs/fleet.md).

| route | methods |
|---|---|
| ``/v1/admin/models`` | ``GET`` every registered model, ``POST`` register one (a ``ModelConfig``) |
| ``/v1/admin/models/{name}`` | ``GET`` its state, ``DELETE`` unload (draining) and forget it |
| ``/v1/admin/models/{name}/load`` | ``POST``: load it; answers once ready (503: why not) |
| ``/v1/admin/models/{name}/unload`` | ``POST`` (``?grace_seconds=S``): drain, then unload |

Registering takes the fields of a configured model (``models[]``), checked by the same
pydantic model; ``name`` and ``source`` are required. A ``source`` may name any file the
server can read: ``models:write`` is an operator's scope.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import falcon
import falcon.asgi
from pydantic import Field, field_validator

from inferflux_core.api.admin import strict_json
from inferflux_core.api.body import read_json
from inferflux_core.auth.scopes import MODELS_READ, MODELS_WRITE
from inferflux_core.config import ModelConfig
from inferflux_core.errors import InvalidRequestError
from inferflux_core.protocol.common import parse_body
from inferflux_core.registry.manifest import Manifest
from inferflux_core.sources import REGISTRY_PREFIX

if TYPE_CHECKING:
    from inferflux_core.engine import Engine

#: A registration body is small.
MODEL_BODY_LIMIT = 64 * 1024
#: Model names registered at runtime: safe in URLs, paths and logs; not ``pull``, which is
#: the pull route's path segment (``/v1/admin/models/pull``).
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
RESERVED_NAMES = frozenset({"pull"})


class ModelRegistration(ModelConfig):
    """``POST /v1/admin/models``: a model's config; ``name`` and ``source`` are required."""

    name: str = Field(pattern=MODEL_NAME_PATTERN)
    source: str = Field(min_length=1, max_length=4096)

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, name: str) -> str:
        if name in RESERVED_NAMES:
            raise ValueError(f"{name!r} is reserved (a path of the model admin API)")
        return name


class _FleetResource:
    """Reads need ``models:read``; changes need ``models:write``."""

    scopes = {"GET": MODELS_READ, "POST": MODELS_WRITE, "DELETE": MODELS_WRITE}

    def __init__(self, engine: Engine) -> None:
        self.fleet = engine.fleet

    @staticmethod
    def reply(resp: falcon.asgi.Response, media: Any, status: str = falcon.HTTP_200) -> None:
        """Send ``media`` as strict JSON."""
        resp.text = strict_json(media)
        resp.content_type = falcon.MEDIA_JSON
        resp.status = status


class ModelsAdminResource(_FleetResource):
    """The registered models."""

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Every registered model with its state."""
        data = [entry.describe() for entry in self.fleet.entries()]
        self.reply(resp, {"object": "list", "data": data})

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Register a model (201); ``load: startup`` starts loading it now."""
        config = parse_body(ModelRegistration, await read_json(req, MODEL_BODY_LIMIT))
        plain = ModelConfig.model_validate(config.model_dump())
        entry = self.fleet.register(plain)
        if plain.load == "startup":
            task = asyncio.get_running_loop().create_task(self.fleet.load(entry.name))
            task.add_done_callback(_ignore_result)
            await asyncio.sleep(0)  # the load has begun: the reply shows ``loading``
        self.reply(resp, entry.describe(), falcon.HTTP_201)


class ModelAdminResource(_FleetResource):
    """One registered model."""

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, name: str) -> None:
        """Its state, reason, times, requests in flight and device."""
        self.reply(resp, self.fleet.entry(name).describe())

    async def on_delete(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, name: str
    ) -> None:
        """Unload it (draining its requests) and forget it."""
        entry = await self.fleet.remove(name)
        self.reply(resp, {"id": entry.name, "object": "model", "deleted": True})

    async def on_post_load(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, name: str
    ) -> None:
        """Load it; the answer comes once it is ready (503 naming the reason if not)."""
        entry = await self.fleet.load(name)
        self.reply(resp, entry.describe())

    async def on_post_unload(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, name: str
    ) -> None:
        """Unload it: running requests get ``grace_seconds`` (default
        ``fleet.unload_grace_seconds``) to finish, then are cancelled with a 503."""
        grace = _grace(req)
        entry = await self.fleet.unload(name, grace=grace)
        self.reply(resp, entry.describe())


def _grace(req: falcon.asgi.Request) -> float | None:
    raw = req.get_param("grace_seconds")
    if raw is None:
        return None
    try:
        grace = float(raw)
    except ValueError:
        grace = float("nan")
    if not 0 <= grace <= 3600:
        raise InvalidRequestError(
            "grace_seconds must be a number of seconds from 0 to 3600", param="grace_seconds"
        )
    return grace


def _ignore_result(task: asyncio.Task[Any]) -> None:
    """A background load's failure is in the model's state; nothing else to report."""
    if not task.cancelled():
        task.exception()


def add_model_admin_routes(app: falcon.asgi.App[Any, Any], engine: Engine) -> None:
    """Mount the model admin API on ``app``."""
    one = ModelAdminResource(engine)
    app.add_route("/v1/admin/models", ModelsAdminResource(engine))
    app.add_route("/v1/admin/models/{name}", one)
    app.add_route("/v1/admin/models/{name}/load", one, suffix="load")
    app.add_route("/v1/admin/models/{name}/unload", one, suffix="unload")


def register_pulled(engine: Engine) -> Callable[[Manifest], None]:
    """The pull route's ``on_pulled``: a model pulled into the registry is registered with
    the fleet as ``registry:NAME``, loaded on demand (as Ollama serves what it pulled); one
    already registered under that name is left as it is (a re-pull refreshes its file)."""

    def on_pulled(manifest: Manifest) -> None:
        if manifest.name in {entry.name for entry in engine.fleet.entries()}:
            return
        engine.fleet.register(
            ModelConfig(
                name=manifest.name, source=f"{REGISTRY_PREFIX}{manifest.name}", load="on_demand"
            )
        )

    return on_pulled
