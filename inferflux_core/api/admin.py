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
"""

from __future__ import annotations

from typing import Any

import falcon
import falcon.asgi

from inferflux_core.api.body import read_json
from inferflux_core.auth.policy_admin import KeyCreate, KeyUpdate, PolicyAdmin, RoleBody
from inferflux_core.auth.scopes import ADMIN
from inferflux_core.contracts import RateLimits
from inferflux_core.protocol.common import parse_body

ADMIN_BODY_LIMIT = 1024 * 1024


class _AdminResource:
    """Every method needs the ``admin`` scope."""

    scopes = {m: ADMIN for m in ("GET", "POST", "PUT", "PATCH", "DELETE")}

    def __init__(self, admin: PolicyAdmin) -> None:
        self.admin = admin

    @staticmethod
    async def body(req: falcon.asgi.Request) -> Any:
        """The JSON body."""
        return await read_json(req, ADMIN_BODY_LIMIT)


class KeysResource(_AdminResource):
    """The collection of keys."""

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Every key, without hashes."""
        resp.media = {"object": "list", "data": self.admin.list_keys()}

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Create a key; the response is the only place the key ever appears."""
        resp.media = self.admin.create_key(parse_body(KeyCreate, await self.body(req)))
        resp.status = falcon.HTTP_201
        resp.set_header("Cache-Control", "no-store")


class KeyResource(_AdminResource):
    """One key."""

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, key_id: str
    ) -> None:
        """The key's record."""
        resp.media = self.admin.get_key(key_id)

    async def on_patch(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, key_id: str
    ) -> None:
        """Change the key's name, roles, scopes, models, expiry or limits."""
        resp.media = self.admin.update_key(key_id, parse_body(KeyUpdate, await self.body(req)))

    async def on_post_revoke(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, key_id: str
    ) -> None:
        """Revoke the key: its next request is refused."""
        resp.media = self.admin.revoke_key(key_id)


class RolesResource(_AdminResource):
    """Roles: built-in and custom."""

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Every role and its scopes."""
        resp.media = {"roles": self.admin.roles()}

    async def on_put_one(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, name: str
    ) -> None:
        """Create or replace a custom role."""
        resp.media = self.admin.set_role(name, parse_body(RoleBody, await self.body(req)))

    async def on_delete_one(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, name: str
    ) -> None:
        """Delete a custom role."""
        self.admin.delete_role(name)
        resp.media = {"deleted": name}


class LimitsResource(_AdminResource):
    """The default rate limits."""

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """The defaults stored in the policy."""
        resp.media = self.admin.limits()

    async def on_put(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Replace the defaults."""
        resp.media = self.admin.set_limits(parse_body(RateLimits, await self.body(req)))


class PolicyResource(_AdminResource):
    """The whole policy document."""

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Export: keys (hashes, never keys), roles, limits, version."""
        resp.media = self.admin.export()
        resp.set_header("Cache-Control", "no-store")

    async def on_put(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Import: replace the policy with an exported one."""
        resp.media = self.admin.import_policy(await self.body(req))


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
