"""The engine: loaded models, routed by name, typed requests in and typed events out.

It knows nothing of HTTP or of any wire format: front doors (``inferflux_core.frontdoors``)
parse their API's requests into :class:`~inferflux_core.contracts.InferenceRequest` and
encode the :data:`~inferflux_core.contracts.InferenceEvent` stream this yields.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from prometheus_client.registry import Collector

from inferflux_core.config import AdapterConfig, ModelConfig, Settings, load_config
from inferflux_core.contracts import RequestBackend
from inferflux_core.contracts.generation import InferenceEvent, InferenceRequest
from inferflux_core.engine import adapters
from inferflux_core.engine.adapter_runtime import register_adapter
from inferflux_core.engine.assemble import step_events
from inferflux_core.engine.backend_choice import choose_backend
from inferflux_core.engine.collect import Collected, Primed, collect
from inferflux_core.engine.fleet import UNSET_KEEP_ALIVE, Fleet, MemoryCheck
from inferflux_core.engine.fleet_entry import ModelState
from inferflux_core.engine.memory_check import ModelMemoryCheck
from inferflux_core.engine.model import LoadedModel, load_model
from inferflux_core.engine.prepare import prepare
from inferflux_core.engine.request_model import RequestModel, load_request_model
from inferflux_core.engine.request_stage import request_events
from inferflux_core.engine.requests import GenerationRequest
from inferflux_core.engine.stream import RequestStream
from inferflux_core.engine.view import PluginEngineView
from inferflux_core.engine.workers import WorkerPool, default_pool
from inferflux_core.errors import (
    InvalidRequestError,
    ModelNotFoundError,
    ServiceUnavailableError,
)
from inferflux_core.metrics import EngineMetrics
from inferflux_core.plugins import PluginHost
from inferflux_core.sources import resolve_model_source
from inferflux_core.tracing import RequestTracer

log = logging.getLogger(__name__)

#: ``Engine(memory_check=...)``'s default: the memory estimate (``ModelMemoryCheck``).
DEFAULT_MEMORY_CHECK: Final[Any] = object()
#: A model the engine serves: stepped by inferflux, or served by a backend that schedules itself.
ServedModel = LoadedModel | RequestModel
#: Called with the most tokens a request can use, before it is submitted (a rate limiter's
#: reservation: it raises to refuse the request).
Reserve = Callable[[int], None]


class Engine:
    """Serves a fleet of models (:attr:`fleet`) and generates for typed requests, without
    any HTTP.

    >>> engine = Engine.from_config()          # the default model
    >>> await engine.start()
    >>> request = InferenceRequest("smollm2-135m-instruct", messages=(ChatMessage("user", "Hi"),))
    >>> async for event in engine.generate(request): ...
    >>> await engine.stop()
    """

    def __init__(
        self,
        settings: Settings,
        *,
        plugins: PluginHost | None = None,
        extra_plugins: Iterable[tuple[str, object]] = (),
        pool: WorkerPool | None = None,
        memory_check: MemoryCheck | None = DEFAULT_MEMORY_CHECK,
    ) -> None:
        self.settings = settings
        self.plugins = plugins or PluginHost(
            autoload=settings.plugins.autoload,
            disable=settings.plugins.disable,
            extra_plugins=extra_plugins,
        )
        self.metrics = EngineMetrics()
        self.metrics.report_backends(self._backend_reports)
        self.metrics.forward_backend_collectors(self._backend_collectors)
        #: The ready models by name (the fleet keeps it up to date).
        self.models: dict[str, ServedModel] = {}
        if memory_check is DEFAULT_MEMORY_CHECK:
            memory_check = ModelMemoryCheck(self.plugins, resolve_path=self._model_path)
        #: Every registered model and its lifecycle (docs/fleet.md). ``memory_check`` runs
        #: before each load (the estimate of docs/planning.md; None: loads are not checked).
        self.fleet = Fleet(
            settings.models,
            settings.fleet,
            load_model=self._load_served,
            close_model=self._close_served,
            served=self.models,
            queue_timeout=settings.scheduler.queue_timeout,
            memory_check=memory_check,
            on_state=self.metrics.model_state,
        )
        self._started = False
        #: Where CPU-heavy request preparation runs (tokenizing, templates, grammars).
        self.pool = pool or default_pool()
        #: A span per generation request when tracing is on (``tracing.enabled``).
        self.tracer = RequestTracer.from_config(settings.tracing.enabled)
        #: What plugin hooks are handed of this engine.
        self.view = PluginEngineView(self.fleet, self.generate)

    @classmethod
    def from_config(
        cls, settings: Settings | None = None, *, config_file: str | None = None, **kw: Any
    ) -> Engine:
        """An engine for ``settings`` (or the file / environment / defaults)."""
        return cls(settings or load_config(config_file), **kw)

    # -- lifecycle ------------------------------------------------------------------------

    def load(self) -> None:
        """Load every ``load: startup`` model (blocking; the memory check, if any, refuses
        one that does not fit next to the others). All load, or none stays loaded.

        A request-level backend's ``start`` runs on a private event loop here; programs that
        run one loop should ``await engine.start()`` instead, which starts it on theirs.
        """
        try:
            loaded: list[ModelConfig] = []
            for config in self.settings.models:
                if config.load == "startup":
                    if self.fleet.memory_check is not None:  # startup models must all fit
                        self.fleet.memory_check(config, loaded)
                    model = self._build(config)
                    loaded.append(config)
                    self.fleet.adopt(config.name, model)
                    if isinstance(model, RequestModel):
                        asyncio.run(model.backend.start())
        except BaseException:
            self.unload()
            raise
        self._started = True
        self.plugins.call_each("on_startup", engine=self.view)

    def unload(self) -> None:
        """Stop every model and release its backend (blocking)."""
        if self._started:
            self.plugins.notify("on_shutdown", engine=self.view)
        self._started = False
        for model in self.fleet.forget_loaded():
            model.close()
            self.metrics.forget_model(model.name)

    async def start(self) -> None:
        """Load the ``load: startup`` models without blocking the event loop (the loading
        runs in a worker thread); on a failure every model is unloaded and it raises."""
        try:
            await self.fleet.start()
        except BaseException:
            await self.fleet.close()
            raise
        failed = [e for e in self.fleet.entries() if e.state is ModelState.FAILED]
        if failed:
            await self.fleet.close()
            raise ServiceUnavailableError(
                f"model {failed[0].name!r} failed to load: {failed[0].reason}"
            )
        self._started = True
        self.attach()
        self.plugins.call_each("on_startup", engine=self.view)

    def attach(self) -> None:
        """Start the fleet's keep_alive timers on the running loop (the server calls this once
        its loop runs: models loaded by the blocking :meth:`load` have none yet)."""
        self.fleet.attach()

    @property
    def started(self) -> bool:
        """True between a successful :meth:`load` / :meth:`start` and the unload."""
        return self._started

    async def stop(self) -> None:
        """Unload the models without blocking the event loop."""
        if self._started:
            self.plugins.notify("on_shutdown", engine=self.view)
        self._started = False
        await self.fleet.close()

    def _model_path(self, config: ModelConfig) -> Path:
        """The local file of ``config``'s source (registry names in this server's registry)."""
        return resolve_model_source(
            config.source, self.plugins, registry_path=self.settings.registry.path
        )

    def _build(self, config: ModelConfig) -> ServedModel:
        """Load one model (blocking): its backend chosen, its file resolved, its loop started;
        on a failure nothing of it stays loaded."""
        scheduler = self.settings.scheduler
        choice = choose_backend(config, self.plugins)
        config = choice.config
        backend_cls = self.plugins.get("backends", config.backend)
        if isinstance(backend_cls, type) and issubclass(backend_cls, RequestBackend):
            return load_request_model(config, scheduler, self.plugins, self.metrics)
        return load_model(
            config,
            scheduler,
            self.plugins,
            self.metrics,
            choice.device,
            registry_path=self.settings.registry.path,
        )

    async def _load_served(self, config: ModelConfig) -> ServedModel:
        """Load one model for the fleet: the blocking part in a worker thread, then a
        request-level backend's ``start`` on this loop (closed again if it fails)."""
        model = await asyncio.to_thread(self._build, config)
        if isinstance(model, RequestModel):
            try:
                await model.backend.start()
            except BaseException:
                with contextlib.suppress(Exception):
                    await model.backend.close()
                raise
        return model

    @staticmethod
    async def _close_served(model: ServedModel) -> None:
        """Stop one model and release its backend, off the event loop."""
        if isinstance(model, RequestModel):
            await model.backend.close()
        else:
            await asyncio.to_thread(model.close)

    def _backend_reports(self) -> list[tuple[str, Mapping[str, float]]]:
        """What each request-level backend reports of itself, by model (for ``/metrics``)."""
        reports = []
        for model in self._request_models():
            try:
                reports.append((model.name, model.backend.metrics()))
            except Exception as exc:
                log.warning("model %s: the backend's metrics failed: %s", model.name, exc)
        return reports

    def _backend_collectors(self) -> list[Collector]:
        """The Prometheus collectors request-level backends bring (for ``/metrics``)."""
        collectors: list[Collector] = []
        for model in self._request_models():
            try:
                collectors.extend(model.backend.prometheus_collectors())
            except Exception as exc:
                log.warning("model %s: the backend's collectors failed: %s", model.name, exc)
        return collectors

    def _request_models(self) -> list[RequestModel]:
        return [m for m in self.models.values() if isinstance(m, RequestModel)]

    # -- models ---------------------------------------------------------------------------

    def model(self, name: str) -> ServedModel:
        """The ready model ``name`` (an alias, or ``BASE:ADAPTER``: the base) names: 404 if
        no model is registered by it, 503 if it is registered but not loaded (generation loads
        it: :meth:`open`)."""
        return self.resolve(name)[0]

    def resolve(self, name: str) -> tuple[ServedModel, AdapterConfig | None]:
        """The ready model ``name`` names and the LoRA adapter it picks (None: the base)."""
        base, adapter = self.split_name(name)
        entry = self.fleet.entry(base)
        model = self.models.get(entry.name)
        if model is None:
            raise ServiceUnavailableError(
                f"model {entry.name!r} is {entry.state.value}, not loaded; a generation "
                f"request loads it, or POST /v1/admin/models/{entry.name}/load",
                code="model_not_loaded",
            )
        return model, self._adapter(model, adapter, name)

    def split_name(self, name: str) -> tuple[str, str | None]:
        """``name`` as (a registered model or alias, the adapter it names or None). A name
        registered whole wins over a ``BASE:ADAPTER`` reading; 404 if neither is known."""
        try:
            self.fleet.resolve(name)
            return name, None
        except ModelNotFoundError:
            base, separator, adapter = name.rpartition(adapters.SEPARATOR)
            if not separator:
                raise
            try:
                self.fleet.resolve(base)
            except ModelNotFoundError:
                self.fleet.resolve(name)  # the 404 names the whole name
                raise
            return base, adapter

    @staticmethod
    def _adapter(model: ServedModel, adapter: str | None, name: str) -> AdapterConfig | None:
        """The adapter of ``model`` called ``adapter`` (None: none asked); 404 if it has none
        by that name."""
        if adapter is None:
            return None
        for configured in model.config.adapters:
            if configured.name == adapter:
                return configured
        served = ", ".join([model.name, *adapters.adapter_names(model.config)])
        raise ModelNotFoundError(
            f"the model {name!r} does not exist; available: {served}", param="model"
        )

    def step_model(self, name: str, what: str = "this endpoint") -> LoadedModel:
        """The step-level model called ``name`` (404 if none; 400 if its backend schedules
        itself and so has no vocabulary or step loop to offer ``what``)."""
        model = self.model(name)
        if not isinstance(model, LoadedModel):
            raise InvalidRequestError(
                f"model {name!r} is served by a request-level backend, which does not support "
                f"{what}",
                param="model",
                code="unsupported",
            )
        return model

    async def add_adapter(self, model: str, adapter: AdapterConfig) -> None:
        """Load a LoRA adapter into the serving step-level ``model`` (see
        :mod:`~inferflux_core.engine.adapter_runtime`); requests may name it once this returns."""
        await register_adapter(self.step_model(model, "adapters"), adapter, self.plugins)

    # -- typed generation ------------------------------------------------------------------

    async def open(
        self, request: InferenceRequest, *, reserve: Reserve | None = None
    ) -> AsyncIterator[InferenceEvent]:
        """Prepare and submit ``request``; iterate the result for its events.

        Every refusal (an unknown model, a bad field, a full queue, a passed ``deadline``,
        ``reserve`` raising) raises here, before any event. Leaving the iteration early, or
        closing it (``aclose``) without reading, cancels the request. On a step-level model the
        deadline is checked before submitting; its queue wait is bounded by
        ``scheduler.queue_timeout``. With tracing on, the request has a span from here to its
        last event (:mod:`inferflux_core.tracing`).
        """
        trace = self.tracer.start(request)
        streams: list[RequestStream] = []
        if trace is None:
            return await self._open(request, reserve, streams)
        with trace.opening():
            events = await self._open(request, reserve, streams)
        return trace.follow(events, lambda: [stream.timing for stream in streams])

    async def _open(
        self, request: InferenceRequest, reserve: Reserve | None, streams: list[RequestStream]
    ) -> AsyncIterator[InferenceEvent]:
        """:meth:`open` without the span: the model admitted through the fleet (loaded if it
        must be), held until the request's events end; the step runner's streams of the
        request are added to ``streams``."""
        keep_alive: float | None = UNSET_KEEP_ALIVE
        if request.keep_alive is not None:  # the request's own: negative is forever
            keep_alive = None if request.keep_alive < 0 else request.keep_alive
        base, adapter_name = self.split_name(request.model)
        model, lease = await self.fleet.admit(
            base, deadline=request.deadline, keep_alive=keep_alive
        )
        try:
            adapter = self._adapter(model, adapter_name, request.model)
            # An alias: the model's own name from here on (with its adapter, if it has one).
            served = (
                model.name if adapter is None else adapters.qualified_name(model.name, adapter.name)
            )
            if served != request.model:
                request = dataclasses.replace(request, model=served)
            return lease.bind(await self._open_on(model, adapter, request, reserve, streams))
        except BaseException:
            lease.release()
            raise

    async def _open_on(
        self,
        model: ServedModel,
        adapter: AdapterConfig | None,
        request: InferenceRequest,
        reserve: Reserve | None,
        streams: list[RequestStream],
    ) -> AsyncIterator[InferenceEvent]:
        if isinstance(model, RequestModel):
            return await request_events(model, request, self.pool, reserve)
        prepared = await self.pool.run(prepare, model, request)
        if request.deadline is not None and time.monotonic() >= request.deadline:
            raise ServiceUnavailableError("the request's deadline passed before it started")
        if reserve is not None:
            reserve(prepared.worst_case)
        sequences = adapters.with_adapter(prepared.sequences, adapter)
        streams.extend(
            [model.runner.submit(sequences[0])]
            if len(sequences) == 1
            else model.runner.submit_group(sequences)
        )
        events = step_events(prepared, streams, model.backend.token_bytes)
        return Primed(await anext(events), events)

    async def generate(
        self, request: InferenceRequest, *, reserve: Reserve | None = None
    ) -> AsyncIterator[InferenceEvent]:
        """Generate ``request``: its events in order, each choice ending with a ``Finish``,
        then a final ``UsageReport``. Closing the iterator cancels the request."""
        events = await self.open(request, reserve=reserve)
        try:
            async for event in events:
                yield event
        finally:
            await events.aclose()  # type: ignore[attr-defined]

    async def collect(self, request: InferenceRequest) -> Collected:
        """Generate ``request`` to its end: each choice's text, tool calls and finish reason,
        and the usage. A choice that failed raises its error."""
        return await collect(await self.open(request))

    # -- the step runner's own requests ----------------------------------------------------

    def submit(self, model: str, request: GenerationRequest) -> RequestStream:
        """Queue a tokenized request on a step-level model; iterate the stream for its events."""
        loaded = self.step_model(model, "token requests")
        adapters.check_adapters(loaded.config, [request])
        return loaded.runner.submit(request)

    def submit_group(
        self, model: str, requests: Sequence[GenerationRequest]
    ) -> list[RequestStream]:
        """Queue requests that share one prompt (``n > 1``); the prompt is prefilled once."""
        loaded = self.step_model(model, "token requests")
        adapters.check_adapters(loaded.config, requests)
        return loaded.runner.submit_group(requests)
