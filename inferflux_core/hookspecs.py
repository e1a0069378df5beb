"""The plugin contract: every hook an inferflux plugin can implement.

A plugin is a module (or object) listed under the ``inferflux`` entry-point group whose
functions are decorated with :data:`hookimpl` and named after the hooks below. Register hooks
*collect*: every plugin's answer is used, and the names they register must be unique across
plugins (two plugins registering one name is a startup error naming both). Hooks marked
*decide* are ``firstresult``: the first plugin that returns something other than ``None`` wins
(``resolve_model_source`` is one).

Implementations may accept only the arguments they need (pluggy passes them by name), and may
be ordered with ``@hookimpl(tryfirst=True)`` / ``trylast``. The classes plugins register
implement the interfaces in :mod:`inferflux_core.contracts`.

The host calls each plugin's implementation on its own, through pluggy, so that a failure
names the plugin: a hook wrapper (``@hookimpl(wrapper=True)``, a generator that yields once)
runs around each implementation in turn and receives that one plugin's answer (for a collect
hook, a list holding it; for a decide hook, the answer itself), which it may change or
replace. ``INFERFLUX_TRACE_PLUGINS=1`` logs every such call with its arguments and result.

A plugin module may declare ``INFERFLUX_HOOKSPEC_VERSION = 1``: the version of this contract
it was written against. A plugin declaring another version than :data:`HOOKSPEC_VERSION` stops
startup with an error naming it; one declaring none is loaded, and ``inferflux plugins
--check`` warns about it.

Isolation: a register hook, ``register_routes``, ``on_startup`` or ``on_shutdown`` that
raises stops startup (or shutdown's hook round) with an error naming the plugin and the hook.
At request time, a failing guardrail or policy store refuses the request (503, fail closed);
an ``on_request_finished`` implementation that raises is logged with the plugin's name and
never affects the request (fail open).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from inferflux_core.contracts import (
        DeviceContext,
        EngineView,
        Guardrail,
        KVTransport,
        PolicyStore,
        RequestBackend,
        Routes,
        Scheduler,
        StepBackend,
    )

PROJECT_NAME = "inferflux"
#: Version of this hook contract; a plugin may declare ``INFERFLUX_HOOKSPEC_VERSION`` to match.
HOOKSPEC_VERSION = 1

#: A ``self_check`` sentence starting with this is a warning (WARN), not a failure.
WARNING_PREFIX = "warning: "

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_device_contexts() -> dict[str, type[DeviceContext]]:
    """Register device contexts by kind (*collect*).

    Called once when the plugin manager loads plugins. Return ``{"cuda": CudaContext}``: a
    mapping from a device kind to a :class:`~inferflux_core.contracts.DeviceContext` subclass.
    ``device: auto`` instantiates each, calls ``detect()`` and picks the present device with
    the highest ``priority``.
    """


@hookspec
def register_backends() -> dict[str, type[StepBackend] | type[RequestBackend]]:
    """Register model backends by name (*collect*).

    Called once when the plugin manager loads plugins. Return ``{"llama_cpp": Backend}``: a
    mapping from the name used in ``models[].backend`` to a backend class of either kind: a
    :class:`~inferflux_core.contracts.StepBackend` (inferflux schedules and steps it),
    constructed with a :class:`~inferflux_core.contracts.BackendSpec`, or a
    :class:`~inferflux_core.contracts.RequestBackend` (it schedules itself), constructed with
    a :class:`~inferflux_core.contracts.RequestBackendSpec`, when a model using it loads. A
    backend that
    sets ``options_model`` has ``models[].options`` documented and shown from that model.
    """


@hookspec
def register_schedulers() -> dict[str, type[Scheduler]]:
    """Register schedulers by name (*collect*).

    Called once when the plugin manager loads plugins. Return ``{"continuous": Scheduler}``:
    a mapping from the name used in ``scheduler.name`` to a
    :class:`~inferflux_core.contracts.Scheduler` subclass. The engine constructs one per loaded
    model with its :class:`~inferflux_core.contracts.SchedulerLimits` and ``scheduler.options``
    as keyword arguments, checked first against the scheduler's ``options_model`` when it
    declares one (an invalid option stops the load naming ``scheduler.options.<key>``).
    """


@hookspec
def register_policy_stores() -> dict[str, type[PolicyStore]]:
    """Register policy stores by name (*collect*).

    Called once when the plugin manager loads plugins. Return ``{"memory": Store}``: a mapping
    from the name used in ``policy.store`` to a :class:`~inferflux_core.contracts.PolicyStore`
    subclass, constructed with ``policy.options`` as keyword arguments when the HTTP app is
    built (and by ``inferflux admin``).
    """


@hookspec
def register_guardrails() -> dict[str, type[Guardrail]]:
    """Register guardrails by name (*collect*).

    Called once when the plugin manager loads plugins. Return ``{"blocklist": Guardrail}``: a
    mapping from the name used in ``guardrails[].name`` to a
    :class:`~inferflux_core.contracts.Guardrail` subclass, constructed with that entry's
    ``options`` as keyword arguments when the HTTP app is built. Every generation request's
    prompt passes each configured guardrail in order (``check_input``); a guardrail may also
    filter the output (``output_filter``). A guardrail that raises refuses the request.
    """


@hookspec
def register_kv_transports() -> dict[str, type[KVTransport]]:
    """Register KV transports by name (*collect*).

    Called once when the plugin manager loads plugins. Return ``{"inprocess": Transport}``: a
    mapping from a transport name to a :class:`~inferflux_core.contracts.KVTransport`
    subclass, constructed with the transport's options as keyword arguments.
    """


@hookspec(firstresult=True)
def resolve_model_source(source: str) -> Path | None:
    """Turn a model ``source`` into a local model file (*decide*: the first answer wins).

    Called when a model loads (and by the conformance kit) with its ``models[].source``, before
    the built-in forms (a path, ``file://``, ``pypi:<distribution>``, ``registry:<name>``) are
    tried. Return the path of the model file for a source this plugin owns
    (``"hf:org/repo/file.gguf"``, an object-store URL, a name in a local catalogue), fetching
    it first if need be; return
    ``None`` for any other source, so other plugins and then the built-in forms get it. The
    file must exist: a path that does not is a ``ModelFileError``. Raise
    :class:`~inferflux_core.errors.ModelFileError` (or ``ConfigError``) for a source this plugin
    owns but cannot provide; it stops the model's load with that message. Any other exception
    stops it with an error naming the plugin. It runs before the model loads, while nothing
    serves: a download may take its time.
    """


@hookspec
def register_routes(app: Routes, engine: EngineView) -> None:
    """Add HTTP routes (*collect*; return value ignored).

    Called once when the ASGI app is built, after the built-in routes are added. ``app`` is
    a :class:`~inferflux_core.contracts.Routes`: ``app.add("GET", "/v1/thing/{id}", handler,
    scope="models:read")`` serves a JSON route with ``async def handler(request:
    RouteRequest)``, which returns the JSON body (or a ``RouteReply``) and may raise any
    ``InferfluxError`` for an error answer. ``app.add_route(path, resource)`` mounts a falcon
    resource as it is (websockets, streams); it declares the scope each method needs with
    ``scopes = {"GET": "models:read"}`` (without one, every method needs ``admin``). Every
    route is authenticated. ``engine`` is an :class:`~inferflux_core.contracts.EngineView`:
    model states and typed generation. An implementation that raises stops startup with an
    error naming the plugin.
    """


@hookspec
def on_startup(engine: EngineView) -> None:
    """Run after the engine has loaded its models and before it serves (*collect*).

    ``engine`` is an :class:`~inferflux_core.contracts.EngineView`. An implementation that
    raises stops startup: the models are unloaded again and the error names the plugin and
    the hook.
    """


@hookspec
def on_shutdown(engine: EngineView) -> None:
    """Run when the engine stops, before models are unloaded (*collect*).

    ``engine`` is an :class:`~inferflux_core.contracts.EngineView`.

    An implementation that raises is logged with the plugin's name; the models still unload.
    """


@hookspec
def on_request_finished(record: dict[str, Any]) -> None:
    """See every finished HTTP request, for metrics and audit sinks (*collect*; fail open).

    Called once per authenticated request when its response is complete (after the last SSE
    event for a stream), whether or not ``audit.enabled`` is set. ``record`` holds the audit
    line's fields: ``time``, ``request_id``, ``key_id``, ``auth``, ``method``, ``path``,
    ``model``, ``status``, ``code``, ``stream``, ``prompt_tokens``, ``completion_tokens``,
    ``latency_ms``, and for generation requests ``prompt_sha256`` / ``response_sha256``
    (plus ``prompt`` / ``response`` text when ``audit.record_text`` is on). Treat it as
    read-only. It runs on the event loop: hand slow work (network, disk) to a queue or thread.
    An exception is logged with the plugin's name; the response is not affected.
    """


@hookspec
def self_check() -> list[str]:
    """Report problems that would stop this plugin from working (*collect*).

    Called by ``inferflux plugins --check``, never while serving. Return a list of problems,
    each a sentence an operator can act on (``"llama_cpp is not importable: ..."``); an empty
    list means the plugin is ready. Check what can be checked cheaply: optional dependencies
    importable, a default model resolvable, a device present. Raising counts as a failure.
    A sentence starting with :data:`WARNING_PREFIX` (``"warning: "``) is a warning, not a
    problem: the plugin works but something is missing that only some setups need (an
    optional engine that is not installed); the check shows WARN and still exits 0.
    """
