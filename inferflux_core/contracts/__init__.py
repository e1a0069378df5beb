"""The interfaces plugins implement, one module per hook family."""

from inferflux_core.contracts.backend import (
    BackendSpec,
    ModelInfo,
    SamplingParams,
    SequenceChunk,
    StepBackend,
    TokenLogprob,
)
from inferflux_core.contracts.device import DeviceContext, DeviceInfo, usable_cores
from inferflux_core.contracts.embedding import EmbeddingInfo
from inferflux_core.contracts.generation import (
    ChatMessage,
    Finish,
    GenerationOptions,
    InferenceEvent,
    InferenceRequest,
    OutputConstraint,
    TextDelta,
    TextLogprob,
    TokenAlternative,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    ToolSpec,
    UsageReport,
)
from inferflux_core.contracts.guardrail import (
    ALLOW,
    Guardrail,
    GuardrailInput,
    GuardrailVerdict,
    OutputFilter,
)
from inferflux_core.contracts.options import PluginOptions, parse_options
from inferflux_core.contracts.policy import ApiKeyRecord, Policy, PolicyStore, RateLimits
from inferflux_core.contracts.request_backend import (
    Readiness,
    RequestBackend,
    RequestBackendCapabilities,
    RequestBackendSpec,
)
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
    "ChatMessage",
    "DeviceContext",
    "DeviceInfo",
    "EmbeddingInfo",
    "Finish",
    "GenerationOptions",
    "Guardrail",
    "GuardrailInput",
    "GuardrailVerdict",
    "InferenceEvent",
    "InferenceRequest",
    "KVBlock",
    "KVTransport",
    "ModelInfo",
    "OutputConstraint",
    "OutputFilter",
    "PluginOptions",
    "Policy",
    "PolicyStore",
    "RateLimits",
    "Readiness",
    "RequestBackend",
    "RequestBackendCapabilities",
    "RequestBackendSpec",
    "SamplingParams",
    "ScheduledChunk",
    "ScheduledSequence",
    "Scheduler",
    "SchedulerLimits",
    "SequenceChunk",
    "SequenceStatus",
    "StepBackend",
    "StepPlan",
    "TextDelta",
    "TextLogprob",
    "TokenAlternative",
    "TokenLogprob",
    "ToolCall",
    "ToolCallDelta",
    "ToolChoice",
    "ToolSpec",
    "UsageReport",
    "parse_options",
    "usable_cores",
]
