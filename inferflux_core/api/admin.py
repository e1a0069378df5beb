"""``/v1/admin/...``: keys, roles, limits and the policy itself (scope ``admin``).

| route | methods |
|---|---|
| ``/v1/admin/keys`` | ``GET`` list, ``POST`` create (the key is in this response only) |
| ``/v1/admin/keys/{key_id}`` | ``GET``, ``PATCH`` (name, roles, scopes, models, expiry, limits) |
| ``/v1/admin/keys/{key_id}/revoke`` | ``POST`` |
| ``/v1/admin/roles`` | ``GET`` |
| ``/v1/admin/roles/{name}`` | ``PUT`` ``{"scopes": [...]}``, ``DELETE`` |
| ``/v1/admin/limits`` | ``GET``, ``PUT`` the default limits |
| ``/v1/admin/policy`` | ``GET`` export, ``PUT`` import |

What a request creates or changes must fit inside its own credential (see
:mod:`inferflux_core.auth.grants`). Store work (file locks, scrypt, fsync) runs in a worker
thread, never on the event loop; responses are strict JSON (no ``NaN``).
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable
from typing import Any, TypeVar

import falcon
import falcon.asgi

from inferflux_core.api.body import read_json
from inferflux_core.auth.policy_admin import KeyCreate, KeyUpdate, PolicyAdmin, RoleBody
from inferflux_core.auth.principal import Principal
from inferflux_core.auth.scopes import ADMIN
from inferflux_core.contracts import RateLimits
from inferflux_core.protocol.common import parse_body

ADMIN_BODY_LIMIT = 1024 * 1024

T = TypeVar("T")


def strict_json(media: Any) -> str:
    """``media`` as JSON that any parser reads: NaN and infinities raise ``ValueError``."""
    return json.dumps(media, ensure_ascii=False, allow_nan=False)


class _AdminResource:
    """Every method needs the ``admin`` scope."""

    scopes = {m: ADMIN for m in ("GET", "POST", "PUT", "PATCH", "DELETE")}

    def __init__(self, admin: PolicyAdmin) -> None:
        self.admin = admin

    @staticmethod
    async def body(req: falcon.asgi.Request) -> Any:
        """The JSON body."""
        return await read_json(req, ADMIN_BODY_LIMIT)

    @staticmethod
    def caller(req: falcon.asgi.Request) -> Principal | None:
        """Whose grants bound the change: the request's credential (None, unbounded, when
        ``auth.mode`` is disabled)."""
        principal: Principal | None = req.context.exchange.principal
        return None if principal is None or principal.kind == "anonymous" else principal

    @staticmethod
    def reply(resp: falcon.asgi.Response, media: Any) -> None:
        """Send ``media`` as strict JSON (the records hold only finite numbers)."""
        resp.text = strict_json(media)
        resp.content_type = falcon.MEDIA_JSON

    @staticmethod
    async def run(call: Callable[..., T], *args: Any) -> T:
        """``call(*args)`` in a worker thread: the store may lock, derive keys and fsync."""
        return await asyncio.to_thread(functools.partial(call, *args))


class KeysResource(_AdminResource):
    """The collection of keys."""

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Every key, without hashes."""
        self.reply(resp, {"object": "list", "data": await self.run(self.admin.list_keys)})

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Create a key; the response is the only place the key ever appears."""
        spec = parse_body(KeyCreate, await self.body(req))
        self.reply(resp, await self.run(self.admin.create_key, spec, self.caller(req)))
        resp.status = falcon.HTTP_201
        resp.set_header("Cache-Control", "no-store")


class KeyResource(_AdminResource):
    """One key."""

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, key_id: str
    ) -> None:
        """The key's record."""
        self.reply(resp, await self.run(self.admin.get_key, key_id))

    async def on_patch(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, key_id: str
    ) -> None:
        """Change the key's name, roles, scopes, models, expiry or limits."""
        changes = parse_body(KeyUpdate, await self.body(req))
        self.reply(resp, await self.run(self.admin.update_key, key_id, changes, self.caller(req)))

    async def on_post_revoke(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, key_id: str
    ) -> None:
        """Revoke the key: its next request is refused."""
        self.reply(resp, await self.run(self.admin.revoke_key, key_id))


class RolesResource(_AdminResource):
    """Roles: built-in and custom."""

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Every role and its scopes."""
        self.reply(resp, {"roles": await self.run(self.admin.roles)})

    async def on_put_one(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, name: str
    ) -> None:
        """Create or replace a custom role."""
        body = parse_body(RoleBody, await self.body(req))
        self.reply(resp, await self.run(self.admin.set_role, name, body, self.caller(req)))

    async def on_delete_one(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, name: str
    ) -> None:
        """Delete a custom role."""
        await self.run(self.admin.delete_role, name)
        self.reply(resp, {"deleted": name})


class LimitsResource(_AdminResource):
    """The default rate limits."""

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """The defaults stored in the policy."""
        self.reply(resp, await self.run(self.admin.limits))

    async def on_put(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Replace the defaults."""
        limits = parse_body(RateLimits, await self.body(req))
        self.reply(resp, await self.run(self.admin.set_limits, limits, self.caller(req)))


class PolicyResource(_AdminResource):
    """The whole policy document."""

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Export: keys (hashes, never keys), roles, limits, version."""
        self.reply(resp, await self.run(self.admin.export))
        resp.set_header("Cache-Control", "no-store")

    async def on_put(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Import: replace the policy with an exported one."""
        document = await self.body(req)
        self.reply(resp, await self.run(self.admin.import_policy, document, self.caller(req)))


def add_admin_routes(app: falcon.asgi.App[Any, Any], admin: PolicyAdmin) -> None:
    """Mount the admin API on ``app``."""
    keys = KeyResource(admin)
    roles = RolesResource(admin)
    app.add_route("/v1/admin/keys", KeysResource(admin))
    app.add_route("/v1/admin/keys/{key_id}", keys)
    app.add_route("/v1/admin/keys/{key_id}/revoke", keys, suffix="revoke")
    app.add_route("/v1/admin/roles", roles)
    app.add_route("/v1/admin/roles/{name}", roles, suffix="one")
    app.add_route("/v1/admin/limits", LimitsResource(admin))
    app.add_route("/v1/admin/policy", PolicyResource(admin))
