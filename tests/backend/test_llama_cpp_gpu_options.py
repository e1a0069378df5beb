"""llama.cpp on GPUs: the GPU options are validated against the device, mapped onto the real
llama.cpp parameter structs, and a GPU device a CPU build cannot offload to is refused.

No GPU is needed: the mapping is checked on llama-cpp-python's own ``llama_model_params`` /
``llama_context_params`` structs, GPU devices are ``DeviceInfo`` values (test doubles of what
a GPU device context reports), and the CPU path loads the real model.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from inferflux_core.contracts import BackendSpec, DeviceInfo, GpuMemory
from inferflux_core.errors import ConfigError
from inferflux_core.sources import find_default_model_path
from inferflux_plugins.backends.llama_cpp import LlamaCppBackend
from inferflux_plugins.backends.llama_cpp.gpu import (
    CPU_PLACEMENT,
    Placement,
    apply_context_params,
    apply_model_params,
    check_offload,
    decide_placement,
    gpu_build_command,
)
from inferflux_plugins.backends.llama_cpp.options import GPU_OPTIONS, parse_options
from inferflux_plugins.backends.llama_cpp.runtime import load_llama
from inferflux_plugins.devices.cpu import CpuContext

CPU = CpuContext().detect()


def gpu_device(kind: str = "cuda", count: int = 2) -> DeviceInfo:
    """A test double of a present GPU device with ``count`` 24 GiB GPUs."""
    gpus = tuple(GpuMemory(i, f"test GPU {i}", 24 << 30, 20 << 30) for i in range(count))
    return DeviceInfo(kind, True, "test GPU 0", count, 24 << 30, gpus=gpus)


def placement(device: DeviceInfo, **options: Any) -> Placement:
    return decide_placement(parse_options(options, "m"), device, "m")


# -- the defaults -----------------------------------------------------------------------------


def test_a_gpu_device_offloads_every_layer_by_default() -> None:
    chosen = placement(gpu_device())
    assert chosen == Placement(-1, "layer", 0, (), True)
    assert chosen.uses_gpu


def test_the_cpu_device_places_nothing_on_a_gpu() -> None:
    assert placement(CPU) == CPU_PLACEMENT
    assert not CPU_PLACEMENT.uses_gpu
    assert placement(CPU, n_gpu_layers=0) == CPU_PLACEMENT


# -- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("n_gpu_layers", 10),
        ("n_gpu_layers", -1),
        ("split_mode", "row"),
        ("main_gpu", 1),
        ("tensor_split", [1, 1]),
        ("offload_kqv", False),
    ],
)
def test_a_gpu_option_on_the_cpu_device_is_a_startup_error_naming_it(
    option: str, value: object
) -> None:
    assert option in GPU_OPTIONS
    with pytest.raises(ConfigError, match=rf"models\.m\.options\.{option}: .*cpu device") as exc:
        placement(CPU, **{option: value})
    assert exc.value.param == f"models.m.options.{option}"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"main_gpu": 2}, r"main_gpu: 2 is not a GPU of the cuda device \(it has 2: 0\.\.1\)"),
        ({"tensor_split": [1, 1, 1]}, r"tensor_split: 3 shares for the cuda device's 2 GPUs"),
        ({"tensor_split": [0, 0]}, r"tensor_split: every share is 0"),
    ],
)
def test_gpu_indices_and_shares_must_fit_the_devices_gpus(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        placement(gpu_device(count=2), **options)


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"n_gpu_layers": -2}, "n_gpu_layers"),
        ({"split_mode": "diagonal"}, "split_mode"),
        ({"main_gpu": -1}, "main_gpu"),
        ({"tensor_split": [1, -0.5]}, "tensor_split.1"),
        ({"tensor_split": []}, "tensor_split"),
        ({"tensor_split": [1.0] * 17}, "tensor_split"),
        ({"tensor_split": [float("nan")]}, "tensor_split.0"),
        ({"offload_kqv": "sometimes"}, "offload_kqv"),
    ],
)
def test_out_of_range_gpu_options_are_refused_with_their_key(
    options: dict[str, Any], key: str
) -> None:
    with pytest.raises(ConfigError, match=rf"models\.m\.options\.{key}"):
        parse_options(options, "m")


def test_a_device_that_does_not_count_its_gpus_leaves_the_indices_to_llama_cpp() -> None:
    unknown = DeviceInfo("cuda", True, "GPU")
    assert placement(unknown, main_gpu=3, tensor_split=[1, 2, 3]).main_gpu == 3


# -- the mapping onto llama.cpp's params ---------------------------------------------------------


@pytest.mark.parametrize(
    ("split_mode", "constant"),
    [
        ("none", "LLAMA_SPLIT_MODE_NONE"),
        ("layer", "LLAMA_SPLIT_MODE_LAYER"),
        ("row", "LLAMA_SPLIT_MODE_ROW"),
        ("tensor", "LLAMA_SPLIT_MODE_TENSOR"),
    ],
)
def test_the_placement_lands_in_llama_model_params(split_mode: str, constant: str) -> None:
    llama = load_llama()
    params = llama.llama_model_default_params()
    chosen = placement(
        gpu_device(count=2),
        n_gpu_layers=20,
        split_mode=split_mode,
        main_gpu=1,
        tensor_split=[3, 1],
    )
    shares = apply_model_params(llama, params, chosen)
    assert params.n_gpu_layers == 20
    assert params.split_mode == getattr(llama, constant)
    assert params.main_gpu == 1
    assert len(shares) == llama.llama_max_devices()
    assert [params.tensor_split[i] for i in range(3)] == [3.0, 1.0, 0.0]


def test_without_tensor_split_llama_cpp_splits_by_free_memory() -> None:
    llama = load_llama()
    params = llama.llama_model_default_params()
    assert apply_model_params(llama, params, placement(gpu_device())) is None
    assert params.n_gpu_layers == -1
    assert not params.tensor_split  # a NULL pointer: llama.cpp's own split


def test_the_kv_cache_goes_where_offload_kqv_says() -> None:
    llama = load_llama()
    on_gpu = llama.llama_context_default_params()
    apply_context_params(on_gpu, placement(gpu_device()))
    assert on_gpu.offload_kqv is True and on_gpu.op_offload is True
    in_host = llama.llama_context_default_params()
    apply_context_params(in_host, placement(gpu_device(), offload_kqv=False))
    assert in_host.offload_kqv is False
    cpu = llama.llama_context_default_params()
    apply_context_params(cpu, CPU_PLACEMENT)
    assert cpu.offload_kqv is False and cpu.op_offload is False


# -- a build that cannot offload -------------------------------------------------------------------


class _CpuBuild:
    """A test double of the ``llama_cpp`` module of a build without GPU offload."""

    @staticmethod
    def llama_supports_gpu_offload() -> bool:
        return False


class _GpuBuild:
    """A test double of the ``llama_cpp`` module of a build with GPU offload."""

    @staticmethod
    def llama_supports_gpu_offload() -> bool:
        return True


@pytest.mark.parametrize(
    ("kind", "flag"),
    [("cuda", "-DGGML_CUDA=on"), ("rocm", "-DGGML_HIP=on"), ("metal", "-DGGML_METAL=on")],
)
def test_a_cpu_build_refuses_a_gpu_device_saying_how_to_install_a_gpu_build(
    kind: str, flag: str
) -> None:
    device = gpu_device(kind, 1)
    with pytest.raises(ConfigError) as exc:
        check_offload(_CpuBuild, device, placement(device))  # type: ignore[arg-type]
    message = str(exc.value)
    assert "cannot offload to a GPU" in message
    assert gpu_build_command(kind) in message
    assert f'CMAKE_ARGS="{flag}" pip install --force-reinstall --no-cache-dir' in message
    assert "llama-cpp-python==0.3.36" in message and "-DGGML_VULKAN=on" in message
    assert "device: cpu" in message


def test_a_gpu_build_or_a_placement_without_the_gpu_is_not_refused() -> None:
    device = gpu_device()
    check_offload(_GpuBuild, device, placement(device))  # type: ignore[arg-type]
    host_only = placement(device, n_gpu_layers=0, offload_kqv=False)
    check_offload(_CpuBuild, device, host_only)  # type: ignore[arg-type]
    check_offload(_CpuBuild, CPU, CPU_PLACEMENT)  # type: ignore[arg-type]


def test_the_backend_says_which_devices_this_build_can_serve() -> None:
    llama = load_llama()
    assert LlamaCppBackend.device_problem(CPU) is None
    problem = LlamaCppBackend.device_problem(gpu_device())
    if llama.llama_supports_gpu_offload():
        assert problem is None
    else:
        assert problem is not None and 'CMAKE_ARGS="-DGGML_CUDA=on"' in problem
    assert "runs on" in str(LlamaCppBackend.device_problem(DeviceInfo("tpu", True)))


def test_the_real_backend_refuses_a_gpu_device_this_build_cannot_offload_to() -> None:
    if load_llama().llama_supports_gpu_offload():
        pytest.skip("this llama-cpp-python build can offload to a GPU")
    spec = BackendSpec("gpu", find_default_model_path(), gpu_device(count=1), 256, 1)
    with pytest.raises(ConfigError, match=r"cannot offload to a GPU.*GGML_CUDA"):
        LlamaCppBackend(spec)


def test_the_real_backend_refuses_gpu_options_on_the_cpu_before_loading_anything() -> None:
    spec = BackendSpec("m", find_default_model_path(), CPU, 256, 1, {"tensor_split": [1]})
    with pytest.raises(ConfigError, match=r"models\.m\.options\.tensor_split"):
        LlamaCppBackend(spec)


def test_the_cpu_path_still_loads_the_real_model_and_logs_its_placement(
    caplog: pytest.LogCaptureFixture,
) -> None:
    spec = BackendSpec("m", find_default_model_path(), CPU, 256, 1, {"n_gpu_layers": 0})
    with caplog.at_level(logging.INFO, logger="inferflux.llama_cpp"):
        backend = LlamaCppBackend(spec)
    try:
        assert "nothing offloaded to a GPU" in caplog.text
        tokens = backend.tokenize("The capital of France is")
        assert tokens and backend.detokenize(tokens).endswith("France is")
    finally:
        backend.close()


@pytest.mark.gpu
def test_on_a_real_gpu_the_default_model_offloads_and_reports_memory() -> None:
    from inferflux_plugins.devices.cuda import CudaContext

    device = CudaContext().detect()
    if not device.present or not load_llama().llama_supports_gpu_offload():
        pytest.skip("needs a CUDA device and a CUDA build of llama-cpp-python")
    assert device.gpus and device.gpus[0].total_bytes > 0
    spec = BackendSpec("m", find_default_model_path(), device, 512, 2)
    backend = LlamaCppBackend(spec)
    try:
        assert backend.tokenize("hello")
    finally:
        backend.close()
