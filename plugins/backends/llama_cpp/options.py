"""The options a ``llama_cpp`` model accepts under ``models[].options``, and what they decide."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from inferflux_core.errors import ConfigError


class LlamaCppOptions(BaseModel):
    """Backend options; unknown keys are an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Repacked weight layouts (llama.cpp's "extra buffer types"): auto = on unless AMX.
    repack: Literal["auto", "on", "off"] = "auto"
    #: Threads for decode and prefill; default: the cores this process may use.
    threads: int | None = Field(None, ge=1, le=1024)
    #: Tokens per llama_decode call (llama.cpp's n_batch and n_ubatch).
    batch_size: int = Field(512, ge=1, le=65536)
    #: Flash attention: auto lets llama.cpp decide.
    flash_attn: Literal["auto", "on", "off"] = "auto"
    #: One KV stream shared by all sequences. The default (false) gives each sequence its own
    #: stream of ``context_length`` cells, which keeps a sequence's numerics independent of what
    #: it is batched with (llama.cpp switches attention kernels once one stream receives 64
    #: query tokens in a call) and is faster at 8 sequences.
    kv_unified: bool = False
    #: How ``/v1/embeddings`` pools a sequence's hidden states into one vector: ``auto`` takes
    #: the GGUF's own pooling (an embedding model's) and ``mean`` for a model without one
    #: (a chat model); ``none`` keeps one vector per token, which the OpenAI API cannot return.
    embedding_pooling: Literal["auto", "mean", "cls", "last", "none"] = "auto"


def parse_options(options: Mapping[str, Any]) -> LlamaCppOptions:
    """Validate ``options``; raise ConfigError naming ``options.<key>`` on the first problem."""
    try:
        return LlamaCppOptions.model_validate(dict(options))
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in ("options", *error["loc"]))
        problems = "; ".join(
            f"options.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid llama_cpp backend option {problems}", param=key) from None


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
