"""The engine as plugin hooks see it: :class:`~inferflux_core.contracts.EngineView`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from inferflux_core.contracts.generation import InferenceEvent, InferenceRequest
from inferflux_core.contracts.host import ModelStatus
from inferflux_core.engine.fleet import Fleet
from inferflux_core.engine.request_model import RequestModel

#: Typed generation, as :meth:`inferflux_core.engine.Engine.generate` does it.
Generate = Callable[[InferenceRequest], AsyncIterator[InferenceEvent]]


class PluginEngineView:
    """What ``register_routes``, ``on_startup`` and ``on_shutdown`` are handed of an
    :class:`~inferflux_core.engine.Engine`: model states and typed generation, nothing more."""

    def __init__(self, fleet: Fleet, generate: Generate):
        self._fleet = fleet
        self._generate = generate

    def model_names(self) -> list[str]:
        """The registered models' names, in configuration (then registration) order."""
        return [entry.name for entry in self._fleet.entries()]

    def status(self, name: str) -> ModelStatus:
        """``name``'s state now (``ModelNotFoundError`` for a model not registered); a model
        not loaded reports its lifecycle state, its configured backend and no requests."""
        entry = self._fleet.entry(name)
        model = entry.model
        if model is None:
            return ModelStatus(
                name=entry.name,
                kind="step",
                backend=entry.config.backend,
                context_length=entry.config.context_length,
                running=0,
                waiting=0,
                failure=entry.reason if entry.state == "failed" else None,
                state=entry.state.value,
            )
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
            state=entry.state.value,
        )

    def generate(self, request: InferenceRequest) -> AsyncIterator[InferenceEvent]:
        """The engine's typed generation (no guardrails, keys or rate limits: those are the
        HTTP layer's)."""
        return self._generate(request)
