"""The options a ``llama_cpp`` model accepts under ``models[].options``, and what they decide."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from inferflux_core.contracts import PluginOptions
from inferflux_core.contracts import parse_options as parse_plugin_options


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
        "auto", description="`auto` (llama.cpp decides), `on`, `off`"
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
