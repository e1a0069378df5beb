"""The options a ``llama_cpp`` model accepts under ``models[].options``, and what they decide."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field

from inferflux_core.contracts import PluginOptions
from inferflux_core.contracts import parse_options as parse_plugin_options

#: llama.cpp's compile-time device limit (``LLAMA_MAX_DEVICES``, ``llama_max_devices()``).
MAX_DEVICES = 16
#: Options that place the model on GPUs: setting one for a cpu device is an error.
GPU_OPTIONS = ("n_gpu_layers", "split_mode", "main_gpu", "tensor_split", "offload_kqv")


class LlamaCppOptions(PluginOptions):
    """``models[].options`` of a ``llama_cpp`` model; unknown keys are an error."""

    repack: Literal["auto", "on", "off"] = Field(
        "auto",
        description="llama.cpp's repacked weight layouts (extra buffer types): `on`, `off`, or "
        "`auto` (off on CPUs with AMX, where they have been seen to crash, and on a GPU device, "
        "which does not say whether its host CPU has AMX; on elsewhere)",
    )
    threads: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="threads for decode and prefill (1 to 1024)",
        json_schema_extra={"doc_default": "usable cores"},
    )
    batch_size: int = Field(
        512,
        ge=1,
        le=65536,
        description="tokens per `llama_decode` call (llama.cpp's `n_batch` and `n_ubatch`)",
    )
    flash_attn: Literal["auto", "on", "off"] = Field(
        "auto", description="flash attention: `auto` (llama.cpp decides), `on`, `off`"
    )
    # GPU placement (llama.cpp's `--n-gpu-layers`, `--split-mode`, `--main-gpu`,
    # `--tensor-split`, `--no-kv-offload`); on a cpu device setting any of them is an error.
    n_gpu_layers: int | None = Field(
        None,
        ge=-1,
        le=100_000,
        description="layers stored on the GPU(s): -1 all, 0 none (weights stay in host memory "
        "and run on the CPU), N the first N; a GPU option",
        json_schema_extra={"doc_default": "-1 on a GPU device, 0 on cpu"},
    )
    split_mode: Literal["none", "layer", "row", "tensor"] = Field(
        "layer",
        description="how a model is spread over several GPUs: `none` (all on `main_gpu`), "
        "`layer` (whole layers and their KV per GPU, pipelined), `row` (each weight split by "
        "rows across GPUs, parallelized), `tensor` (weights and KV split across GPUs, "
        "llama.cpp's experimental tensor parallelism); a GPU option",
    )
    main_gpu: int = Field(
        0,
        ge=0,
        le=255,
        description="the GPU (index among the device's GPUs) holding the whole model with "
        "`split_mode: none`, or the intermediate results and KV with `row`; a GPU option",
    )
    tensor_split: list[Annotated[float, Field(ge=0.0, le=1e6, allow_inf_nan=False)]] | None = Field(
        None,
        min_length=1,
        max_length=MAX_DEVICES,
        description="the share of the model each GPU gets, in GPU order (`[3, 1]`: three "
        "quarters on GPU 0); at most one entry per GPU of the device; unset: in proportion "
        "to each GPU's free memory; a GPU option",
    )
    offload_kqv: bool = Field(
        True,
        description="keep the KV cache and attention on the GPU (`false`: in host memory, "
        "llama.cpp's `--no-kv-offload`); a GPU option",
    )
    # Separate streams keep a sequence's numerics independent of its batch: llama.cpp switches
    # attention kernels once one stream receives 64 query tokens in a call. Also faster at 8.
    kv_unified: bool = Field(
        False,
        description="`false`: each sequence has its own KV stream of `context_length` cells, so "
        "its output does not depend on what it is batched with; `true`: one stream shared by "
        "all sequences",
    )
    embedding_pooling: Literal["auto", "mean", "cls", "last", "none"] = Field(
        "auto",
        description="how `/v1/embeddings` pools a model's hidden states: `auto` (the GGUF's own "
        "pooling, else `mean`), `mean`, `cls`, `last`, or `none` (embeddings refused with a "
        "400); see [configuration](configuration.md)",
    )
    structured_output: Literal["auto", "llguidance", "gbnf"] = Field(
        "auto",
        description="what enforces `response_format` JSON schemas and JSON mode: `llguidance` "
        "(its token mask; `pattern`, `oneOf`, `allOf`, most `format`s), `gbnf` (llama.cpp's "
        "grammar sampler; a smaller subset of JSON Schema), or `auto` (llguidance when the "
        "llguidance package is installed, else gbnf); forced tool calls use the same engine, "
        "GBNF grammars always use gbnf; see [structured output](structured-output.md)",
    )


def parse_options(options: Mapping[str, Any], model_name: str | None = None) -> LlamaCppOptions:
    """Validate ``options``; ConfigError naming ``models.<model_name>.options.<key>``."""
    key = f"models.{model_name}.options" if model_name else "options"
    return parse_plugin_options(LlamaCppOptions, options, key)


@dataclass(frozen=True, slots=True)
class RepackDecision:
    """Whether to load weights into llama.cpp's extra (repacked) buffer types, and why."""

    use_extra_bufts: bool
    reason: str


def decide_repack(setting: str, has_amx: bool | None) -> RepackDecision:
    """``repack: auto`` turns repacking off on AMX CPUs and on elsewhere; on/off are honoured.

    On AMX CPUs llama.cpp's extra buffer types (its AMX kernels and repacked layouts) have
    been seen to crash or misbehave, so ``auto`` leaves them off there; elsewhere the repacked
    layouts are llama.cpp's faster default. ``has_amx`` is None when the device the model was
    given does not describe the CPU (a GPU device): ``auto`` then takes the safe side, off.
    """
    if setting == "on":
        return RepackDecision(True, "repack: on")
    if setting == "off":
        return RepackDecision(False, "repack: off")
    if has_amx is None:
        return RepackDecision(False, "repack: auto and the device does not say if the CPU has AMX")
    if has_amx:
        return RepackDecision(False, "repack: auto and the CPU has AMX")
    return RepackDecision(True, "repack: auto and the CPU has no AMX")
