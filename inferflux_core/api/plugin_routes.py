"""Plugin routes: :class:`~inferflux_core.contracts.Routes` over the falcon app.

``register_routes`` implementations add JSON handlers with :meth:`PluginRoutes.add`; once the
hook round is over, :meth:`PluginRoutes.install` mounts one falcon resource per path, whose
``scopes`` say what each method needs (the access middleware enforces them before routing).
Bodies are read and checked as on every built-in route; answers are JSON; errors are the
front door's JSON error bodies.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import falcon
import falcon.asgi

from inferflux_core.api.body import encode_json, read_json
from inferflux_core.auth.scopes import SCOPES
from inferflux_core.contracts.host import RouteHandler, RouteMethod, RouteReply, RouteRequest
from inferflux_core.errors import PluginError

_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
_WITH_BODY = frozenset({"POST", "PUT", "PATCH", "DELETE"})
Responder = Callable[..., Coroutine[Any, Any, None]]


@dataclass
class _PathRoutes:
    handlers: dict[str, RouteHandler] = field(default_factory=dict)
    scopes: dict[str, str] = field(default_factory=dict)


class PluginRoutes:
    """The :class:`~inferflux_core.contracts.Routes` handed to ``register_routes``."""

    def __init__(self, app: falcon.asgi.App[Any, Any], max_body_bytes: int) -> None:
        self._app = app
        self._limit = max_body_bytes
        self._paths: dict[str, _PathRoutes] = {}

    def add(self, method: RouteMethod, path: str, handler: RouteHandler, *, scope: str) -> None:
        """Serve ``method`` on ``path`` with ``handler``; callers need ``scope``."""
        verb = str(method).upper()
        if verb not in _METHODS:
            raise PluginError(f"route {path}: method {method!r} is not one of {_METHODS}")
        if scope not in SCOPES:
            raise PluginError(f"route {verb} {path}: unknown scope {scope!r}; one of {SCOPES}")
        if not path.startswith("/"):
            raise PluginError(f"route {path!r}: a path starts with '/'")
        routes = self._paths.setdefault(path, _PathRoutes())
        if verb in routes.handlers:
            raise PluginError(f"route {verb} {path} is added twice")
        routes.handlers[verb] = handler
        routes.scopes[verb] = scope

    def add_route(self, path: str, resource: object, *, suffix: str | None = None) -> None:
        """Mount a falcon resource as it is."""
        self._app.add_route(path, resource, suffix=suffix)

    def install(self) -> None:
        """Mount the JSON routes added so far (called once, after ``register_routes``)."""
        for path, routes in self._paths.items():
            self._app.add_route(path, _json_resource(routes, self._limit))
        self._paths.clear()


def _json_resource(routes: _PathRoutes, limit: int) -> object:
    """A falcon resource answering each of ``routes``' methods with its handler."""
    responders: dict[str, Any] = {"scopes": dict(routes.scopes)}
    for verb, handler in routes.handlers.items():
        responders[f"on_{verb.lower()}"] = _responder(handler, limit)
    return type("PluginJsonResource", (), responders)()


def _responder(handler: RouteHandler, limit: int) -> Responder:
    async def respond(
        self: object, req: falcon.asgi.Request, resp: falcon.asgi.Response, **params: str
    ) -> None:
        body = None
        if req.method in _WITH_BODY and (req.content_length or 0) > 0:
            body = await read_json(req, limit)
        exchange = req.context.get("exchange")
        principal = exchange.principal if exchange is not None else None
        request = RouteRequest(
            method=req.method,
            path=req.path,
            params=params,
            query={name: req.get_param(name) or "" for name in req.params},
            headers={name.lower(): value for name, value in req.headers.items()},
            body=body,
            key_id=principal.key_id if principal is not None else None,
            scopes=principal.scopes if principal is not None else frozenset(),
        )
        answer = await handler(request)
        reply = answer if isinstance(answer, RouteReply) else RouteReply(answer)
        resp.status = falcon.code_to_http_status(reply.status)
        for name, value in reply.headers.items():
            resp.set_header(name, value)
        resp.content_type = falcon.MEDIA_JSON
        resp.data = encode_json(reply.body)

    return respond
