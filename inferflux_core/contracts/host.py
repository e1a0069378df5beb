"""What plugin hooks are handed: the running engine and the HTTP routes, as typed facades.

``register_routes(app, engine)``, ``on_startup(engine)`` and ``on_shutdown(engine)`` receive
these instead of the engine object and the falcon app, so a plugin depends on this contract,
not on how the core happens to be built:

- :class:`EngineView`: which models are served, each one's state, and typed generation
  (:class:`~inferflux_core.contracts.InferenceRequest` in, events out), exactly as a front
  door uses it;
- :class:`Routes`: JSON routes added as plain async functions of a :class:`RouteRequest`,
  each method guarded by a scope. A plugin that needs falcon itself (websockets, streaming)
  may still hand a falcon resource to :meth:`Routes.add_route`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from inferflux_core.contracts.generation import InferenceEvent, InferenceRequest

#: The HTTP methods a JSON route may serve.
RouteMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]


@dataclass(frozen=True, slots=True)
class ModelStatus:
    """One served model, as a plugin may see it."""

    name: str
    #: ``step``: inferflux schedules it; ``request``: its backend schedules itself.
    kind: Literal["step", "request"]
    #: The registered backend name (``llama_cpp``, ``openai_upstream``, ...).
    backend: str
    context_length: int
    #: Requests generating now, and requests waiting for a slot.
    running: int
    waiting: int
    #: Why the model stopped serving; None while it serves.
    failure: str | None = None
    #: Its lifecycle state (docs/fleet.md): ``registered``, ``loading``, ``ready``,
    #: ``failed`` or ``unloading``.
    state: Literal["registered", "loading", "ready", "failed", "unloading"] = "ready"


@runtime_checkable
class EngineView(Protocol):
    """The running engine, as plugin hooks see it."""

    def model_names(self) -> list[str]:
        """The registered models' names, loaded or not (``status(name).state`` says which),
        in configuration order, then runtime registration order."""
        ...

    def status(self, name: str) -> ModelStatus:
        """``name``'s state now (``ModelNotFoundError`` for a model not registered)."""
        ...

    def generate(self, request: InferenceRequest) -> AsyncIterator[InferenceEvent]:
        """Generate ``request``: typed events, each choice ending in a ``Finish``, then a
        ``UsageReport``. Refusals raise before the first event; closing the iterator cancels
        the request. Guardrails, keys and rate limits are the HTTP layer's: not applied here."""
        ...


@dataclass(frozen=True, slots=True)
class RouteRequest:
    """One call to a plugin's JSON route."""

    method: str
    path: str
    #: Fields of the route's path template (``/v1/things/{thing_id}`` gives ``thing_id``).
    params: Mapping[str, str]
    #: The query string, one value per name.
    query: Mapping[str, str]
    #: Request headers, names in lower case.
    headers: Mapping[str, str]
    #: The parsed JSON body (checked as every built-in route's is); None without a body.
    body: Any
    #: The caller's key id (safe to log); None for an anonymous caller.
    key_id: str | None
    #: The scopes the caller holds.
    scopes: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class RouteReply:
    """A JSON answer with a status other than 200, or with headers."""

    body: Any
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)


#: A JSON route: returns the body (answered with 200) or a :class:`RouteReply`. Raising an
#: ``inferflux_core.errors.InferfluxError`` answers with its status and an OpenAI-style error
#: body; any other exception is a 500 without details (and is logged).
RouteHandler = Callable[[RouteRequest], Awaitable[Any]]


@runtime_checkable
class Routes(Protocol):
    """Where a plugin adds HTTP routes. Every route is authenticated; none can be public."""

    def add(self, method: RouteMethod, path: str, handler: RouteHandler, *, scope: str) -> None:
        """Serve ``method`` on ``path`` (a falcon path template: ``/v1/x/{id}``) with
        ``handler``; callers need ``scope`` (``inference``, ``models:read``, ``admin``, ...)."""
        ...

    def add_route(self, path: str, resource: object, *, suffix: str | None = None) -> None:
        """Mount a falcon resource as it is (for websockets or streamed answers). Its
        ``scopes`` class attribute (``{"GET": "models:read", "WEBSOCKET": "inference"}``) says
        which scope each method needs; without one, every method needs ``admin``."""
        ...
