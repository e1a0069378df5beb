"""The interfaces plugins implement, one module per hook family."""

from inferflux_core.contracts.backend import (
    BackendSpec,
    ModelInfo,
    SamplingParams,
    SequenceChunk,
    StepBackend,
)
from inferflux_core.contracts.device import DeviceContext, DeviceInfo
from inferflux_core.contracts.policy import ApiKeyRecord, PolicyStore
from inferflux_core.contracts.scheduler import (
    ScheduledChunk,
    ScheduledSequence,
    Scheduler,
    SchedulerLimits,
    SequenceStatus,
    StepPlan,
)
from inferflux_core.contracts.transport import KVBlock, KVTransport

__all__ = [
    "ApiKeyRecord",
    "BackendSpec",
    "DeviceContext",
    "DeviceInfo",
    "KVBlock",
    "KVTransport",
    "ModelInfo",
    "PolicyStore",
    "SamplingParams",
    "ScheduledChunk",
    "ScheduledSequence",
    "Scheduler",
    "SchedulerLimits",
    "SequenceChunk",
    "SequenceStatus",
    "StepBackend",
    "StepPlan",
]
