"""The engine: loaded models, routed by name. The Python API other apps embed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

from inferflux_core.config import Settings, load_config
from inferflux_core.engine.model import LoadedModel, load_model
from inferflux_core.engine.requests import GenerationEvent, GenerationRequest
from inferflux_core.engine.stream import RequestStream
from inferflux_core.errors import ModelNotFoundError
from inferflux_core.metrics import EngineMetrics
from inferflux_core.plugins import PluginHost

log = logging.getLogger(__name__)


class Engine:
    """Loads the configured models and serves generation requests, without any HTTP.

    >>> engine = Engine.from_config()          # the default model
    >>> await engine.start()
    >>> reply = await engine.chat({"model": "smollm2-135m-instruct", "messages": [...]})
    >>> await engine.stop()
    """

    def __init__(
        self,
        settings: Settings,
        *,
        plugins: PluginHost | None = None,
        extra_plugins: Iterable[tuple[str, object]] = (),
    ) -> None:
        self.settings = settings
        self.plugins = plugins or PluginHost(
            autoload=settings.plugins.autoload,
            disable=settings.plugins.disable,
            extra_plugins=extra_plugins,
        )
        self.metrics = EngineMetrics()
        self.models: dict[str, LoadedModel] = {}
        from inferflux_core.serving import ChatService, CompletionService
        from inferflux_core.serving.embeddings import EmbeddingService

        self.chat_service = ChatService(self)
        self.completion_service = CompletionService(self)
        self.embedding_service = EmbeddingService(self)

    @classmethod
    def from_config(
        cls, settings: Settings | None = None, *, config_file: str | None = None, **kw: Any
    ) -> Engine:
        """An engine for ``settings`` (or the file / environment / defaults)."""
        return cls(settings or load_config(config_file), **kw)

    def load(self) -> None:
        """Load every configured model (blocking). All load, or none stays loaded."""
        try:
            for model_config in self.settings.models:
                self.models[model_config.name] = load_model(
                    model_config, self.settings.scheduler, self.plugins, self.metrics
                )
        except BaseException:
            self.unload()
            raise
        self.plugins.call_each("on_startup", engine=self)

    def unload(self) -> None:
        """Stop every step loop and release every model (blocking)."""
        if self.models:
            self.plugins.notify("on_shutdown", engine=self)
        for model in self.models.values():
            model.runner.stop()
            model.backend.close()
        self.models.clear()

    async def start(self) -> None:
        """Load the models without blocking the event loop."""
        await asyncio.to_thread(self.load)

    async def stop(self) -> None:
        """Unload the models without blocking the event loop."""
        await asyncio.to_thread(self.unload)

    def model(self, name: str) -> LoadedModel:
        """The loaded model called ``name``; ModelNotFoundError otherwise."""
        try:
            return self.models[name]
        except KeyError:
            raise ModelNotFoundError(
                f"the model {name!r} does not exist; available: {', '.join(self.models)}",
                param="model",
            ) from None

    def submit(self, model: str, request: GenerationRequest) -> RequestStream:
        """Queue a tokenized request; iterate the returned stream for its events."""
        return self.model(model).runner.submit(request)

    def submit_group(
        self, model: str, requests: Sequence[GenerationRequest]
    ) -> list[RequestStream]:
        """Queue requests that share one prompt (``n > 1``); the prompt is prefilled once."""
        return self.model(model).runner.submit_group(requests)

    async def generate(
        self, model: str, request: GenerationRequest
    ) -> AsyncIterator[GenerationEvent]:
        """Submit and yield the request's events; closing the iterator cancels it."""
        async for event in self.submit(model, request):
            yield event

    async def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """An OpenAI chat completion for an OpenAI request body."""
        return await self.chat_service.create(body)

    async def stream_chat(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """OpenAI ``chat.completion.chunk`` objects for a streaming request body."""
        async for chunk in await self.chat_service.open_stream(body):
            yield chunk

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        """An OpenAI text completion for an OpenAI request body."""
        return await self.completion_service.create(body)

    async def stream_complete(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """OpenAI text-completion chunks for a streaming request body."""
        async for chunk in await self.completion_service.open_stream(body):
            yield chunk

    async def embed(self, body: dict[str, Any]) -> dict[str, Any]:
        """OpenAI embeddings (``{"object": "list", "data": [...]}``) for a request body."""
        return await self.embedding_service.create(body)
