"""The scheduler of one model: its limits from the model and the engine-level scheduler
config, its own options checked against the scheduler's options model."""

from __future__ import annotations

from inferflux_core.config import ModelConfig, SchedulerConfig
from inferflux_core.contracts import ModelInfo, Scheduler, SchedulerLimits, StepBackend
from inferflux_core.contracts.options import checked_options, options_of
from inferflux_core.errors import ConfigError

#: Where a scheduler's options sit in the configuration.
OPTIONS_KEY = "scheduler.options"


def scheduler_limits(
    model: ModelConfig, scheduler: SchedulerConfig, info: ModelInfo, backend: StepBackend
) -> SchedulerLimits:
    """The bounds every scheduler of ``model`` keeps."""
    return SchedulerLimits(
        max_sequences=model.max_sequences,
        context_length=info.context_length,
        kv_capacity=info.kv_capacity,
        # A whole chunk must always fit beside a full decode step, or prefill could starve.
        token_budget=max(scheduler.token_budget, scheduler.prefill_chunk + model.max_sequences),
        prefill_chunk=scheduler.prefill_chunk,
        max_queue=scheduler.max_queue,
        preemption=backend.supports_preemption,
    )


def make_scheduler(
    scheduler_cls: type[Scheduler],
    model: ModelConfig,
    scheduler: SchedulerConfig,
    info: ModelInfo,
    backend: StepBackend,
) -> Scheduler:
    """Construct ``model``'s scheduler; ConfigError names the option it refuses
    (``scheduler.options.timeslice_tokens: ...``)."""
    options = checked_options(options_of(scheduler_cls), scheduler.options, OPTIONS_KEY)
    limits = scheduler_limits(model, scheduler, info, backend)
    try:
        return scheduler_cls(limits, **options)
    except TypeError as exc:
        raise ConfigError(f"{OPTIONS_KEY}: {exc}", param=OPTIONS_KEY) from None
