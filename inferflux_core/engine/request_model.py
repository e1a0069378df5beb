"""A model served by a request-level backend (one that schedules itself)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from inferflux_core.chat_template import ChatTemplate
from inferflux_core.config import ModelConfig, SchedulerConfig
from inferflux_core.contracts.request_backend import RequestBackend, RequestBackendSpec
from inferflux_core.engine.adapters import refuse_adapters
from inferflux_core.engine.request_runner import RequestRunner
from inferflux_core.engine.sampling_defaults import Defaults, model_sampling_defaults
from inferflux_core.errors import ChatTemplateError, PluginError
from inferflux_core.metrics import EngineMetrics
from inferflux_core.plugins import PluginHost

log = logging.getLogger(__name__)


@dataclass(eq=False)
class RequestModel:
    """A model ready to serve through its backend's own scheduler."""

    name: str
    config: ModelConfig
    backend: RequestBackend
    runner: RequestRunner
    template: ChatTemplate | None
    created: int
    #: What requests that leave sampling fields out get (``engine.sampling_defaults``).
    sampling_defaults: Defaults = field(default_factory=dict)

    @property
    def failure(self) -> str | None:
        """Why the model stopped serving; None while it serves."""
        return self.runner.failure

    @property
    def context_length(self) -> int:
        """Tokens of context per request, as configured."""
        return self.config.context_length

    @property
    def serves_embeddings(self) -> bool:
        """True if ``/v1/embeddings`` may use this model."""
        return self.config.embeddings and self.backend.capabilities.embeddings

    def render_chat(self, messages: list[dict[str, object]], **kwargs: object) -> str:
        """Render messages with the backend's chat template (for ``input == "tokens"``)."""
        if self.template is None:
            raise ChatTemplateError(
                f"model {self.name!r}: its backend takes tokens but has no chat template "
                "(set models[].chat_template)"
            )
        return self.template.render(messages, **kwargs)  # type: ignore[arg-type]

    def close(self) -> None:
        """Release the backend (blocking: runs its ``close`` on a private loop)."""
        asyncio.run(self.backend.close())


def load_request_model(
    config: ModelConfig,
    scheduler_config: SchedulerConfig,
    host: PluginHost,
    metrics: EngineMetrics | None = None,
) -> RequestModel:
    """Construct ``config``'s request-level backend and start it (blocking)."""
    started = time.monotonic()
    refuse_adapters(config, "request-level backends do not serve inferflux's LoRA adapters")
    backend_cls = host.get("backends", config.backend)
    spec = RequestBackendSpec(
        model_name=config.name,
        source=config.source,
        context_length=config.context_length,
        max_sequences=config.max_sequences,
        device=config.device,
        options=config.options,
    )
    try:
        backend: RequestBackend = backend_cls(spec)
    except TypeError as exc:
        raise PluginError(f"models.{config.name}: backend {config.backend!r}: {exc}") from exc
    template_source = config.template_override()
    if template_source is None and backend.capabilities.input == "tokens":
        template_source = backend.chat_template()
    template = ChatTemplate(template_source) if template_source else None
    runner = RequestRunner(
        config.name,
        backend,
        max_running=config.max_sequences,
        max_queue=scheduler_config.max_queue,
        queue_timeout=scheduler_config.queue_timeout,
        metrics=metrics,
    )
    if metrics is not None:
        metrics.model_loaded(config.name, time.monotonic() - started)
    log.info("model %s served by request-level backend %s", config.name, config.backend)
    defaults = model_sampling_defaults(config, {})
    return RequestModel(config.name, config, backend, runner, template, int(time.time()), defaults)
