"""LoRA adapters of served models: their names (``BASE:ADAPTER``), lookup and loading.

A model's adapters come from its config (``models[].adapters``). A request picks one with
``model: "BASE:ADAPTER"`` (or the ``adapter`` field of chat and completions, folded into that
form by :func:`qualified_name`). A model whose own name holds a ``:`` is matched whole first.
See docs/adapters.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

from inferflux_core.config import AdapterConfig, ModelConfig
from inferflux_core.contracts import Scheduler, StepBackend
from inferflux_core.engine.requests import GenerationRequest
from inferflux_core.errors import (
    ConfigError,
    InvalidRequestError,
    ModelFileError,
    ModelNotFoundError,
)
from inferflux_core.gguf_check import metadata_str, read_gguf_header
from inferflux_core.sources import resolve_model_source

if TYPE_CHECKING:
    from inferflux_core.plugins import PluginHost

#: Between a base model's name and its adapter's in a request's ``model``.
SEPARATOR = ":"
#: Longest ``adapter`` field taken from a request.
MAX_ADAPTER_NAME = 64


class Configured(Protocol):
    """A served model, as far as adapters care: its config."""

    @property
    def config(self) -> ModelConfig:
        """The model's configuration."""


M = TypeVar("M", bound=Configured)


def qualified_name(model: str, adapter: object) -> str:
    """``model`` with a request's ``adapter`` field folded in (``BASE:ADAPTER``).

    No adapter (None or empty) leaves ``model`` as it is, and so does a ``model`` that names
    the same adapter already; anything but a short string is a 400.
    """
    if adapter is None or adapter == "":
        return model
    if not isinstance(adapter, str) or len(adapter) > MAX_ADAPTER_NAME:
        raise InvalidRequestError(
            f"adapter: must be an adapter name of at most {MAX_ADAPTER_NAME} characters",
            param="adapter",
        )
    suffix = SEPARATOR + adapter
    return model if model.endswith(suffix) else model + suffix


def resolve(models: Mapping[str, M], name: str) -> tuple[M, AdapterConfig | None] | None:
    """The model ``name`` names and the adapter it picks (None: the base), or None if no
    loaded model or adapter has that name."""
    model = models.get(name)
    if model is not None:
        return model, None
    base, separator, adapter = name.rpartition(SEPARATOR)
    model = models.get(base) if separator else None
    if model is None:
        return None
    for configured in model.config.adapters:
        if configured.name == adapter:
            return model, configured
    return None


def adapter_names(config: ModelConfig) -> list[str]:
    """The ``BASE:ADAPTER`` names a model's adapters are served as."""
    return [config.name + SEPARATOR + adapter.name for adapter in config.adapters]


def projects_of(config: ModelConfig, adapter: AdapterConfig | None) -> tuple[str | None, ...]:
    """The projects a caller must belong to (or None: any) to see the model (and adapter)."""
    return (config.project,) if adapter is None else (config.project, adapter.project)


def with_adapter(
    requests: Sequence[GenerationRequest], adapter: AdapterConfig | None
) -> list[GenerationRequest]:
    """The prepared requests, to run under ``adapter`` (None: unchanged)."""
    if adapter is None:
        return list(requests)
    return [replace(request, adapter=adapter.name) for request in requests]


def check_adapters(config: ModelConfig, requests: Sequence[GenerationRequest]) -> None:
    """404 model_not_found for a request naming an adapter ``config`` does not list."""
    known = {adapter.name for adapter in config.adapters}
    for request in requests:
        if request.adapter is not None and request.adapter not in known:
            raise ModelNotFoundError(
                f"the model {config.name!r} has no adapter {request.adapter!r}", param="model"
            )


def refuse_adapters(config: ModelConfig, why: str) -> None:
    """ConfigError if ``config`` lists adapters, which its backend cannot serve (``why``)."""
    if config.adapters:
        raise ConfigError(f"models.{config.name}.adapters: {why}", param="adapters")


def check_can_serve(
    config: ModelConfig, backend: StepBackend, scheduler_cls: type[Scheduler]
) -> None:
    """ConfigError unless ``backend`` applies adapters and the scheduler keeps each step to
    one adapter; ``config`` lists adapters (or is about to)."""
    if not backend.supports_adapters:
        raise ConfigError(
            f"models.{config.name}.adapters: the {config.backend!r} backend does not serve "
            "LoRA adapters",
            param="adapters",
        )
    if not scheduler_cls.groups_adapters:
        raise ConfigError(
            f"models.{config.name}.adapters: the scheduler {scheduler_cls.__name__} may batch "
            "sequences of different adapters into one step (it does not set `groups_adapters`)",
            param="adapters",
        )


def adapter_file(config: ModelConfig, adapter: AdapterConfig, host: PluginHost | None) -> Path:
    """The adapter's GGUF, checked (bounds first, then its type) before any C code reads it."""
    path = resolve_model_source(adapter.source, host)
    header = read_gguf_header(path)
    kinds = (metadata_str(header, "general.type"), metadata_str(header, "adapter.type"))
    if kinds != ("adapter", "lora"):
        raise ModelFileError(
            f"models.{config.name}.adapters.{adapter.name}: {path} is not a LoRA adapter "
            f"GGUF (general.type={kinds[0]!r}, adapter.type={kinds[1]!r})"
        )
    return path


def load_adapters(
    config: ModelConfig,
    backend: StepBackend,
    scheduler_cls: type[Scheduler],
    host: PluginHost,
) -> None:
    """Load every adapter ``config`` lists into ``backend``, each checked to be a LoRA GGUF."""
    if not config.adapters:
        return
    check_can_serve(config, backend, scheduler_cls)
    for adapter in config.adapters:
        backend.load_adapter(adapter.name, adapter_file(config, adapter, host), adapter.scale)
