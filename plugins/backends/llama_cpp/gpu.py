"""Where a llama.cpp model's weights and KV cache live: the GPU options checked against the
device and the llama.cpp build, and what they become in llama.cpp's model and context params.

A GPU option (``n_gpu_layers``, ``split_mode``, ``main_gpu``, ``tensor_split``,
``offload_kqv``) set for a model on the cpu device is a startup error, not a warning:
llama-server ignores such flags on a CPU build, but here it would mean a model meant for a GPU
silently runs on the CPU (``device: auto`` on a machine whose GPU was not found, say).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from inferflux_core.contracts import DeviceInfo
from inferflux_core.errors import ConfigError
from inferflux_plugins.backends.llama_cpp.options import GPU_OPTIONS, LlamaCppOptions

#: The llama-cpp-python release every extra of inferflux pins.
LLAMA_CPP_VERSION = "0.3.36"
#: The CMake switch that builds llama.cpp for each kind of GPU.
BUILD_FLAGS = {
    "cuda": "-DGGML_CUDA=on",
    "rocm": "-DGGML_HIP=on",
    "metal": "-DGGML_METAL=on",
    "vulkan": "-DGGML_VULKAN=on",
}
#: ``split_mode`` values and the ``llama_cpp`` constants they become.
SPLIT_MODES = {
    "none": "LLAMA_SPLIT_MODE_NONE",
    "layer": "LLAMA_SPLIT_MODE_LAYER",
    "row": "LLAMA_SPLIT_MODE_ROW",
    "tensor": "LLAMA_SPLIT_MODE_TENSOR",
}


@dataclass(frozen=True, slots=True)
class Placement:
    """Where the model goes: layers on the GPU(s), how they split, where the KV cache lives."""

    n_gpu_layers: int
    split_mode: str
    main_gpu: int
    tensor_split: tuple[float, ...]
    offload_kqv: bool

    @property
    def uses_gpu(self) -> bool:
        """True if any weight or KV is to be placed on a GPU."""
        return self.n_gpu_layers != 0 or self.offload_kqv


#: A model on the cpu device: nothing on a GPU, even with a GPU build of llama.cpp.
CPU_PLACEMENT = Placement(0, "none", 0, (), False)


def gpu_build_command(kind: str) -> str:
    """The command that reinstalls llama-cpp-python built for ``kind`` (CUDA by default)."""
    flag = BUILD_FLAGS.get(kind, BUILD_FLAGS["cuda"])
    return (
        f'CMAKE_ARGS="{flag}" pip install --force-reinstall --no-cache-dir '
        f"llama-cpp-python=={LLAMA_CPP_VERSION}"
    )


def decide_placement(
    options: LlamaCppOptions, device: DeviceInfo, model_name: str | None = None
) -> Placement:
    """The placement ``options`` ask for on ``device``; ConfigError naming the option if they
    do not fit it (a GPU option on the cpu device, a GPU index or split past its GPUs)."""
    key = f"models.{model_name}.options" if model_name else "options"
    if device.kind == "cpu":
        given = [
            name
            for name in GPU_OPTIONS
            if name in options.model_fields_set
            and not (name == "n_gpu_layers" and options.n_gpu_layers == 0)
        ]
        if given:
            raise ConfigError(
                f"{key}.{given[0]}: {', '.join(given)} place the model on a GPU, but it runs "
                "on the cpu device; remove them, or choose a GPU device (`device: cuda`, "
                "`rocm` or `metal`)",
                param=f"{key}.{given[0]}",
            )
        return CPU_PLACEMENT
    gpus = device.count
    if gpus and options.main_gpu >= gpus:
        raise ConfigError(
            f"{key}.main_gpu: {options.main_gpu} is not a GPU of the {device.kind} device "
            f"(it has {gpus}: 0..{gpus - 1})",
            param=f"{key}.main_gpu",
        )
    shares = tuple(options.tensor_split or ())
    if shares and gpus and len(shares) > gpus:
        raise ConfigError(
            f"{key}.tensor_split: {len(shares)} shares for the {device.kind} device's {gpus} "
            f"GPU{'s' if gpus > 1 else ''}",
            param=f"{key}.tensor_split",
        )
    if shares and not any(shares):
        raise ConfigError(
            f"{key}.tensor_split: every share is 0 (leave it unset to split by free memory)",
            param=f"{key}.tensor_split",
        )
    layers = -1 if options.n_gpu_layers is None else options.n_gpu_layers
    return Placement(layers, options.split_mode, options.main_gpu, shares, options.offload_kqv)


def check_offload(llama: ModuleType, device: DeviceInfo, placement: Placement) -> None:
    """ConfigError, saying how to install a GPU build, when ``placement`` needs a GPU that
    this llama.cpp build cannot offload to."""
    if device.kind == "cpu" or not placement.uses_gpu or llama.llama_supports_gpu_offload():
        return
    raise ConfigError(
        f"the {device.kind} device ({device.name or 'a GPU'}) was chosen, but this "
        "llama-cpp-python build cannot offload to a GPU (it was built for the CPU). Install a "
        f"GPU build: {gpu_build_command(device.kind)} (Vulkan: "
        f'CMAKE_ARGS="{BUILD_FLAGS["vulkan"]}"), or serve on the CPU with `device: cpu`',
        param="device",
    )


def apply_model_params(llama: ModuleType, params: Any, placement: Placement) -> Any:
    """Set ``placement`` on llama.cpp's ``llama_model_params``; returns the ``tensor_split``
    array, which must stay alive until the model is loaded (None without one)."""
    params.n_gpu_layers = placement.n_gpu_layers
    params.split_mode = getattr(llama, SPLIT_MODES[placement.split_mode])
    params.main_gpu = placement.main_gpu
    if not placement.tensor_split:
        return None
    slots = int(llama.llama_max_devices())
    if len(placement.tensor_split) > slots:
        raise ConfigError(
            f"tensor_split has {len(placement.tensor_split)} shares; this llama.cpp build "
            f"supports at most {slots} devices",
            param="tensor_split",
        )
    shares = (ctypes.c_float * slots)(*placement.tensor_split)
    params.tensor_split = ctypes.cast(shares, ctypes.POINTER(ctypes.c_float))
    return shares


def apply_context_params(params: Any, placement: Placement) -> None:
    """Set where ``llama_context_params`` put the KV cache and the host ops."""
    params.offload_kqv = placement.offload_kqv
    if hasattr(params, "op_offload"):
        # llama.cpp copies large host-weight matmuls to a GPU during prefill; a cpu placement
        # means none at all, even with a GPU build.
        params.op_offload = placement.uses_gpu


def describe(placement: Placement, device: DeviceInfo) -> str:
    """One line for the log: where the model goes."""
    if not placement.uses_gpu:
        return f"on the {device.kind} device, nothing offloaded to a GPU"
    layers = "all layers" if placement.n_gpu_layers < 0 else f"{placement.n_gpu_layers} layers"
    split = f", tensor_split {list(placement.tensor_split)}" if placement.tensor_split else ""
    return (
        f"{layers} on {device.count or '?'} {device.kind} GPU(s) "
        f"(split_mode {placement.split_mode}, main_gpu {placement.main_gpu}{split}), "
        f"KV cache {'on the GPU' if placement.offload_kqv else 'in host memory'}"
    )
