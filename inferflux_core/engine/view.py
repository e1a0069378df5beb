"""The engine as plugin hooks see it: :class:`~inferflux_core.contracts.EngineView`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping

from inferflux_core.contracts.generation import InferenceEvent, InferenceRequest
from inferflux_core.contracts.host import ModelStatus
from inferflux_core.engine.model import LoadedModel
from inferflux_core.engine.request_model import RequestModel
from inferflux_core.errors import ModelNotFoundError

#: Typed generation, as :meth:`inferflux_core.engine.Engine.generate` does it.
Generate = Callable[[InferenceRequest], AsyncIterator[InferenceEvent]]


class PluginEngineView:
    """What ``register_routes``, ``on_startup`` and ``on_shutdown`` are handed of an
    :class:`~inferflux_core.engine.Engine`: model states and typed generation, nothing more."""

    def __init__(self, models: Mapping[str, LoadedModel | RequestModel], generate: Generate):
        self._models = models
        self._generate = generate

    def model_names(self) -> list[str]:
        """The served models' names, in configuration order."""
        return list(self._models)

    def status(self, name: str) -> ModelStatus:
        """``name``'s state now (``ModelNotFoundError`` for a model not served)."""
        model = self._models.get(name)
        if model is None:
            raise ModelNotFoundError(f"the model {name!r} does not exist", param="model")
        if isinstance(model, RequestModel):
            kind, running, waiting = "request", model.runner.running, model.runner.waiting
        else:
            scheduler = model.runner.scheduler
            kind, running, waiting = "step", scheduler.running_count, scheduler.waiting_count
        return ModelStatus(
            name=model.name,
            kind=kind,  # type: ignore[arg-type]
            backend=model.config.backend,
            context_length=model.context_length,
            running=running,
            waiting=waiting,
            failure=model.failure,
        )

    def generate(self, request: InferenceRequest) -> AsyncIterator[InferenceEvent]:
        """The engine's typed generation (no guardrails, keys or rate limits: those are the
        HTTP layer's)."""
        return self._generate(request)
