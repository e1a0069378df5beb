"""The interfaces plugins implement, one module per hook family."""

from inferflux_core.contracts.backend import (
    BackendSpec,
    ModelInfo,
    SamplingParams,
    SequenceChunk,
    StepBackend,
    TokenLogprob,
)
from inferflux_core.contracts.device import DeviceContext, DeviceInfo
from inferflux_core.contracts.embedding import EmbeddingInfo
from inferflux_core.contracts.guardrail import (
    ALLOW,
    Guardrail,
    GuardrailInput,
    GuardrailVerdict,
    OutputFilter,
)
from inferflux_core.contracts.policy import ApiKeyRecord, Policy, PolicyStore, RateLimits
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
    "ALLOW",
    "ApiKeyRecord",
    "BackendSpec",
    "DeviceContext",
    "DeviceInfo",
    "EmbeddingInfo",
    "Guardrail",
    "GuardrailInput",
    "GuardrailVerdict",
    "KVBlock",
    "KVTransport",
    "ModelInfo",
    "OutputFilter",
    "Policy",
    "PolicyStore",
    "RateLimits",
    "SamplingParams",
    "ScheduledChunk",
    "ScheduledSequence",
    "Scheduler",
    "SchedulerLimits",
    "SequenceChunk",
    "SequenceStatus",
    "StepBackend",
    "StepPlan",
    "TokenLogprob",
]
