"""The engine: loaded models, routed by name, typed requests in and typed events out.

It knows nothing of HTTP or of any wire format: front doors (``inferflux_core.frontdoors``)
parse their API's requests into :class:`~inferflux_core.contracts.InferenceRequest` and
encode the :data:`~inferflux_core.contracts.InferenceEvent` stream this yields.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any

from prometheus_client.registry import Collector

from inferflux_core.config import AdapterConfig, Settings, load_config
from inferflux_core.contracts import RequestBackend
from inferflux_core.contracts.generation import InferenceEvent, InferenceRequest
from inferflux_core.engine import adapters
from inferflux_core.engine.adapter_runtime import register_adapter
from inferflux_core.engine.assemble import step_events
from inferflux_core.engine.backend_choice import choose_backend
from inferflux_core.engine.collect import Collected, Primed, collect
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

log = logging.getLogger(__name__)

#: A model the engine serves: stepped by inferflux, or served by a backend that schedules itself.
ServedModel = LoadedModel | RequestModel
#: Called with the most tokens a request can use, before it is submitted (a rate limiter's
#: reservation: it raises to refuse the request).
Reserve = Callable[[int], None]


class Engine:
    """Loads the configured models and generates for typed requests, without any HTTP.

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
        self.models: dict[str, ServedModel] = {}
        #: Where CPU-heavy request preparation runs (tokenizing, templates, grammars).
        self.pool = pool or default_pool()
        #: What plugin hooks are handed of this engine.
        self.view = PluginEngineView(self.models, self.generate)

    @classmethod
    def from_config(
        cls, settings: Settings | None = None, *, config_file: str | None = None, **kw: Any
    ) -> Engine:
        """An engine for ``settings`` (or the file / environment / defaults)."""
        return cls(settings or load_config(config_file), **kw)

    # -- lifecycle ------------------------------------------------------------------------

    def load(self) -> None:
        """Load every configured model (blocking). All load, or none stays loaded.

        A request-level backend's ``start`` runs on a private event loop here; programs that
        run one loop should ``await engine.start()`` instead, which starts it on theirs.
        """
        self._load_all()
        try:
            for model in self._request_models():
                asyncio.run(model.backend.start())
        except BaseException:
            self.unload()
            raise
        self.plugins.call_each("on_startup", engine=self.view)

    def unload(self) -> None:
        """Stop every model and release its backend (blocking)."""
        if self.models:
            self.plugins.notify("on_shutdown", engine=self.view)
        for model in self.models.values():
            model.close()
        self.models.clear()

    async def start(self) -> None:
        """Load the models without blocking the event loop."""
        await asyncio.to_thread(self._load_all)
        try:
            for model in self._request_models():
                await model.backend.start()
        except BaseException:
            await self.stop()
            raise
        self.plugins.call_each("on_startup", engine=self.view)

    async def stop(self) -> None:
        """Unload the models without blocking the event loop."""
        for model in self._request_models():
            try:
                await model.backend.close()
            except Exception as exc:
                log.warning("model %s failed to close: %s", model.name, exc)
        for name in [m.name for m in self._request_models()]:
            del self.models[name]
        await asyncio.to_thread(self.unload)

    def _load_all(self) -> None:
        scheduler = self.settings.scheduler
        try:
            for configured in self.settings.models:
                choice = choose_backend(configured, self.plugins)
                config = choice.config
                backend_cls = self.plugins.get("backends", config.backend)
                if isinstance(backend_cls, type) and issubclass(backend_cls, RequestBackend):
                    self.models[config.name] = load_request_model(
                        config, scheduler, self.plugins, self.metrics
                    )
                else:
                    self.models[config.name] = load_model(
                        config, scheduler, self.plugins, self.metrics, choice.device
                    )
        except BaseException:
            self.unload()
            raise

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
        """The loaded model called ``name`` (``BASE:ADAPTER``: the base); ModelNotFoundError
        otherwise."""
        return self.resolve(name)[0]

    def resolve(self, name: str) -> tuple[ServedModel, AdapterConfig | None]:
        """The loaded model ``name`` names and the LoRA adapter it picks (None: the base)."""
        found = adapters.resolve(self.models, name)
        if found is None:
            raise ModelNotFoundError(
                f"the model {name!r} does not exist; available: {', '.join(self.models)}",
                param="model",
            )
        return found

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
        ``scheduler.queue_timeout``.
        """
        model, adapter = self.resolve(request.model)
        if isinstance(model, RequestModel):
            return await request_events(model, request, self.pool, reserve)
        prepared = await self.pool.run(prepare, model, request)
        if request.deadline is not None and time.monotonic() >= request.deadline:
            raise ServiceUnavailableError("the request's deadline passed before it started")
        if reserve is not None:
            reserve(prepared.worst_case)
        sequences = adapters.with_adapter(prepared.sequences, adapter)
        streams = (
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
