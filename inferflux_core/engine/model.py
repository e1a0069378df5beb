"""A loaded step-level model: its backend, chat template and step loop, under the name it is
served as."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from inferflux_core.chat_template import ChatTemplate
from inferflux_core.config import ModelConfig, SchedulerConfig
from inferflux_core.contracts import BackendSpec, DeviceInfo, RequestBackend, StepBackend
from inferflux_core.engine.adapters import load_adapters
from inferflux_core.engine.devices import select_device
from inferflux_core.engine.draft_model import DraftModel, load_draft_model
from inferflux_core.engine.runner import ModelRunner
from inferflux_core.engine.sampling_defaults import Defaults, model_sampling_defaults
from inferflux_core.engine.scheduling import make_scheduler
from inferflux_core.engine.speculation import speculation_settings
from inferflux_core.errors import ChatTemplateError, ConfigError
from inferflux_core.metrics import EngineMetrics
from inferflux_core.plugins import PluginHost
from inferflux_core.sources import resolve_model_source

log = logging.getLogger(__name__)


@dataclass(eq=False)
class LoadedModel:
    """A model ready to serve."""

    name: str
    config: ModelConfig
    path: Path
    backend: StepBackend
    device: DeviceInfo
    runner: ModelRunner
    template: ChatTemplate | None
    created: int
    #: What requests that leave sampling fields out get (``engine.sampling_defaults``).
    sampling_defaults: Defaults = field(default_factory=dict)
    #: The model that drafts for it (``speculative.method: draft_model``), if loaded.
    draft_model: DraftModel | None = None

    def render_chat(self, messages: list[dict[str, object]], **kwargs: object) -> str:
        """Render messages with the model's chat template (ChatTemplateError if it has none)."""
        if self.template is None:
            raise ChatTemplateError(
                f"model {self.name!r} has no chat template in its file and none is configured "
                f"(set models[].chat_template); use /v1/completions with a raw prompt instead"
            )
        return self.template.render(messages, **kwargs)  # type: ignore[arg-type]

    @property
    def failure(self) -> str | None:
        """Why the model stopped serving (its step loop gave up); None while it serves."""
        return self.runner.health.failure

    @property
    def context_length(self) -> int:
        """Tokens of context per sequence (``max_model_len``)."""
        return self.backend.info.context_length

    def close(self) -> None:
        """Stop the step loop and release the backend (blocking). A step thread that does not
        stop keeps its backend: freeing llama.cpp's context under a running decode would
        crash the process, so the memory is left to the process's exit instead."""
        if self.runner.stop():
            if self.draft_model is not None:
                self.draft_model.close()
            self.backend.close()
        else:
            log.error(
                "model %s: the step thread did not stop; its backend is not released",
                self.name,
            )

    @property
    def serves_embeddings(self) -> bool:
        """True if ``/v1/embeddings`` may use this model (its backend can, its config allows)."""
        return self.config.embeddings and self.backend.supports_embeddings

    def tokenize_prompt(self, text: str) -> list[int]:
        """Tokenize a rendered prompt, adding BOS only where the model wants it and lacks it."""
        info = self.backend.info
        add_bos = info.add_bos and not (info.bos_token and text.startswith(info.bos_token))
        return self.backend.tokenize(text, add_special=add_bos)


def load_model(
    config: ModelConfig,
    scheduler_config: SchedulerConfig,
    host: PluginHost,
    metrics: EngineMetrics,
    device: DeviceInfo | None = None,
    registry_path: Path | None = None,
) -> LoadedModel:
    """Resolve, validate and load ``config``, and start its step loop.

    ``device`` is the device already chosen for it (by ``backend: auto``); None: chosen here
    from ``config.device``. ``registry_path`` is where ``registry:NAME`` sources are (the
    config's ``registry.path``; None: the default folder).
    """
    started = time.monotonic()
    metrics.model_state(config.name, "loading")
    try:
        loaded = _load(config, scheduler_config, host, metrics, device, registry_path)
    except BaseException:
        metrics.model_state(config.name, "failed")
        raise
    seconds = time.monotonic() - started
    metrics.model_loaded(config.name, seconds)
    log.info(
        "model %s loaded from %s on %s in %.1f s",
        config.name,
        loaded.path,
        loaded.device.kind,
        seconds,
    )
    return loaded


def _load(
    config: ModelConfig,
    scheduler_config: SchedulerConfig,
    host: PluginHost,
    metrics: EngineMetrics,
    device: DeviceInfo | None,
    registry_path: Path | None,
) -> LoadedModel:
    backend_cls = host.get("backends", config.backend)
    if isinstance(backend_cls, type) and issubclass(backend_cls, RequestBackend):
        raise ConfigError(
            f"models.{config.name}.backend: {config.backend!r} is a request-level backend; "
            "it is loaded by the engine's request runner, not as a step model"
        )
    scheduler_cls = host.get("schedulers", scheduler_config.name)
    path = resolve_model_source(config.source, host, registry_path=registry_path)
    if device is None:
        supported = getattr(backend_cls, "supported_devices", ("cpu",))
        device = select_device(host, config.device, supported)
    spec = BackendSpec(
        model_name=config.name,
        model_path=path,
        device=device,
        context_length=config.context_length,
        max_sequences=config.max_sequences,
        options=config.options,
    )
    backend: StepBackend = backend_cls(spec)
    draft_model: DraftModel | None = None
    try:
        load_adapters(config, backend, scheduler_cls, host)
        draft_model = load_draft_model(config, backend_cls, spec, backend, host, registry_path)
        info = backend.info
        template_source = config.template_override() or info.chat_template
        template = (
            ChatTemplate(template_source, bos_token=info.bos_token, eos_token=info.eos_token)
            if template_source
            else None
        )
        if template is None:
            log.warning("model %s has no chat template: chat completions will fail", config.name)
        scheduler = make_scheduler(scheduler_cls, config, scheduler_config, info, backend)
        eog_tokens = [t for t in range(info.vocab_size) if backend.is_end_of_generation(t)]
        runner = ModelRunner(
            config.name,
            backend,
            scheduler,
            metrics,
            max_sequences=config.max_sequences,
            context_length=info.context_length,
            eog_tokens=eog_tokens,
            prefix_reuse=scheduler_config.prefix_reuse,
            reuse_generated=scheduler_config.reuse_generated,
            queue_timeout=scheduler_config.queue_timeout,
            max_queue=scheduler_config.max_queue,
            speculation=speculation_settings(config.speculative),
            draft_model=draft_model,
        )
    except BaseException:
        if draft_model is not None:
            draft_model.close()
        backend.close()
        raise
    runner.start()
    return LoadedModel(
        name=config.name,
        config=config,
        path=path,
        backend=backend,
        device=device,
        runner=runner,
        template=template,
        created=int(time.time()),
        sampling_defaults=model_sampling_defaults(config, info.metadata),
        draft_model=draft_model,
    )
