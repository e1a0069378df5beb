"""The memory check before a model loads: its estimate against its device's free memory.

:func:`check_model_memory` is what :func:`~inferflux_core.engine.model.load_model` runs when
``models[].memory_check`` is on; :class:`ModelMemoryCheck` is the same check in the shape the
fleet's ``memory_check`` glue point takes (the model to load, the models loaded now).

On the CPU, ``MemAvailable`` already leaves out what loaded models hold in private memory
(their KV caches, which llama.cpp clears and so touches at once) but still counts their
weights (file pages the kernel could reclaim, and would, to the model's cost) and their
compute buffers (reserved, touched only as far as a batch goes). So those two are taken off
the free figure for every model loaded here. A GPU's free figure comes from its driver,
which counts every allocation already.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from inferflux_core.config import ModelConfig
from inferflux_core.contracts import DeviceInfo, RequestBackend
from inferflux_core.engine.backend_choice import choose_backend
from inferflux_core.engine.device_memory import format_bytes, free_memory
from inferflux_core.engine.memory import (
    ContextSettings,
    MemoryEstimate,
    ModelMemory,
    check_fits,
)
from inferflux_core.errors import ModelFileError
from inferflux_core.gguf_format import MAGIC
from inferflux_core.plugins import PluginHost
from inferflux_core.sources import resolve_model_source

log = logging.getLogger(__name__)


def context_settings(config: ModelConfig) -> ContextSettings:
    """The context settings ``config`` gives llama.cpp: its ``batch_size``, ``flash_attn`` and
    ``kv_unified`` options where set (and well typed; the backend checks them), else the
    ``llama_cpp`` backend's defaults."""
    options = config.options
    defaults = ContextSettings()
    batch = options.get("batch_size", defaults.batch_tokens)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        batch = defaults.batch_tokens
    unified = options.get("kv_unified", defaults.kv_unified)
    return ContextSettings(
        batch_tokens=batch,
        flash_attention=options.get("flash_attn", "auto") != "off",
        kv_unified=unified if isinstance(unified, bool) else defaults.kv_unified,
    )


def estimate_for(
    config: ModelConfig, path: Path, draft_path: Path | None = None
) -> MemoryEstimate | None:
    """``config``'s estimate for the model file at ``path``, with its draft model's (the file
    at ``draft_path``, loaded for the same context) added when given; None when a file is not
    a GGUF model whose metadata the estimate understands (a warning says why: the backend
    then decides on its own)."""
    estimate = _estimate_file(config, path)
    if estimate is None or draft_path is None:
        return estimate
    draft = _estimate_file(config, draft_path)
    return None if draft is None else with_draft_model(estimate, draft)


def with_draft_model(estimate: MemoryEstimate, draft: MemoryEstimate) -> MemoryEstimate:
    """``estimate`` with a draft model's weights, KV cache and buffers added (its per-token
    figures stay the model's own)."""
    return dataclasses.replace(
        estimate,
        weights_bytes=estimate.weights_bytes + draft.weights_bytes,
        kv_bytes=estimate.kv_bytes + draft.kv_bytes,
        compute_bytes=estimate.compute_bytes + draft.compute_bytes,
        output_bytes=estimate.output_bytes + draft.output_bytes,
        overhead_bytes=estimate.overhead_bytes + draft.overhead_bytes,
    )


def _estimate_file(config: ModelConfig, path: Path) -> MemoryEstimate | None:
    if not _is_gguf(path):
        return None
    try:
        memory = ModelMemory.from_file(path)
        return memory.estimate(
            config.context_length, config.max_sequences, context_settings(config)
        )
    except ModelFileError as exc:
        log.warning("model %s: memory check skipped: %s", config.name, exc.message)
        return None


def check_model_memory(
    config: ModelConfig,
    path: Path,
    device: DeviceInfo,
    loaded: Sequence[MemoryEstimate] = (),
    draft_path: Path | None = None,
) -> MemoryEstimate | None:
    """Raise :class:`~inferflux_core.errors.InsufficientMemoryError` when ``config`` (with
    its draft model's file at ``draft_path``, if any) would not fit on ``device`` beside the
    ``loaded`` models (their estimates, on the same device); return its estimate (None when
    there is none to make)."""
    estimate = estimate_for(config, path, draft_path)
    if estimate is None:
        return None
    free = free_memory(device)
    if free is None:
        log.info("model %s: %s does not report free memory; not checked", config.name, device.kind)
        return estimate
    if device.kind == "cpu":
        free -= sum(other.weights_bytes + other.compute_bytes for other in loaded)
    check_fits(estimate, free, model=config.name, device=f"the {device.kind} device")
    log.info(
        "model %s: needs about %s of the %s free on %s",
        config.name,
        format_bytes(estimate.total_bytes),
        format_bytes(free),
        device.kind,
    )
    return estimate


class ModelMemoryCheck:
    """The fleet's memory check: ``check(config, loaded_configs)`` resolves each model's file
    and device as the engine would, and raises
    :class:`~inferflux_core.errors.InsufficientMemoryError` when ``config`` does not fit.

    ``resolve_path`` turns a config into its model file (``resolve_model_source`` of its
    ``source`` through ``host`` by default). Models of request-level backends (vLLM sizes
    its own memory) and configs with ``memory_check: false`` are not checked. A model's
    draft model (``speculative.method: draft_model``) counts with it.
    """

    def __init__(
        self,
        host: PluginHost,
        resolve_path: Callable[[ModelConfig], Path] | None = None,
    ) -> None:
        self.host = host
        self.resolve_path = resolve_path or (lambda c: resolve_model_source(c.source, host))

    def __call__(self, config: ModelConfig, loaded: Sequence[ModelConfig]) -> None:
        """Check ``config`` against its device's free memory beside ``loaded``."""
        placed = self._placed(config)
        if placed is None or not config.memory_check:
            return
        path, device = placed
        others = []
        for other in loaded:
            other_placed = self._placed(other)
            if other_placed is not None and other_placed[1].kind == device.kind:
                estimate = estimate_for(other, other_placed[0], self._draft_path(other))
                others.extend([estimate] if estimate is not None else [])
        check_model_memory(config, path, device, others, self._draft_path(config))

    def _draft_path(self, config: ModelConfig) -> Path | None:
        """The file of ``config``'s draft model, resolved as its own source is."""
        speculative = config.speculative
        if speculative.method != "draft_model" or speculative.draft_model is None:
            return None
        return self.resolve_path(config.model_copy(update={"source": speculative.draft_model}))

    def _placed(self, config: ModelConfig) -> tuple[Path, DeviceInfo] | None:
        choice = choose_backend(config, self.host)
        backend_cls = self.host.get("backends", choice.config.backend)
        if choice.device is None or (
            isinstance(backend_cls, type) and issubclass(backend_cls, RequestBackend)
        ):
            return None
        return self.resolve_path(choice.config), choice.device


def _is_gguf(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(len(MAGIC)) == MAGIC
    except OSError:
        return False
