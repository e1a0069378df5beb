"""``backend: auto`` (the default) and ``device: auto``: which backend serves a model, where.

GPUs are test doubles of device contexts (``GpuDoubleContext``), and the other backends test
doubles (``OffloadingLlamaDouble``, the echo request backend registered as ``vllm``), each
clearly named; the CPU path uses the real devices plugin, the real llama_cpp backend and a
real engine loading the default model.
"""

from __future__ import annotations

import logging
import types
from typing import Any, ClassVar

import pytest

from inferflux_core.cli.config_view import effective_config
from inferflux_core.config import ModelConfig, Settings
from inferflux_core.contracts import DeviceContext, DeviceInfo, GpuMemory
from inferflux_core.engine import Engine, backend_choice
from inferflux_core.engine.backend_choice import choose_backend
from inferflux_core.errors import ConfigError
from inferflux_core.extras import extra_installed, extra_requirements
from inferflux_core.hookspecs import hookimpl
from inferflux_core.plugins import PluginHost
from inferflux_plugins import devices, schedulers
from inferflux_plugins.backends import llama_cpp
from inferflux_plugins.backends.llama_cpp import LlamaCppBackend
from inferflux_plugins.backends.llama_cpp.runtime import load_llama
from tests.request_backend_double import EchoRequestBackend

CPU_BUILD = not load_llama().llama_supports_gpu_offload()
needs_cpu_build = pytest.mark.skipif(not CPU_BUILD, reason="this llama.cpp build can offload")


class GpuDoubleContext(DeviceContext):
    """A test double of a device context that finds one 24 GiB CUDA GPU."""

    kind = "cuda"
    priority = 100
    detections: ClassVar[int] = 0

    def detect(self) -> DeviceInfo:
        GpuDoubleContext.detections += 1
        gpu = GpuMemory(0, "GPU double", 24 << 30, 23 << 30)
        return DeviceInfo("cuda", True, "GPU double", 1, 24 << 30, gpus=(gpu,))


class OffloadingLlamaDouble(LlamaCppBackend):
    """A test double of the llama_cpp backend as a GPU build would answer ``device_problem``."""

    @classmethod
    def device_problem(cls, device: DeviceInfo) -> str | None:
        return None


def _plugin(name: str, hook: str, value: dict[str, Any]) -> tuple[str, object]:
    module = types.ModuleType(name)
    setattr(module, hook, hookimpl(lambda: value))
    module.INFERFLUX_HOOKSPEC_VERSION = 1  # type: ignore[attr-defined]
    return name, module


GPU_DOUBLE = _plugin("gpu_double", "register_device_contexts", {"cuda": GpuDoubleContext})
VLLM_DOUBLE = _plugin("vllm_double", "register_backends", {"vllm": EchoRequestBackend})
#: Only the real cpu device context (so a GPU on the test machine does not interfere).
CPU_DEVICE = _plugin("cpu_only", "register_device_contexts", {"cpu": devices.CpuContext})
LLAMA = ("llama_cpp", llama_cpp)
CPU_ONLY = [CPU_DEVICE, LLAMA]


def host(*plugins: tuple[str, object]) -> PluginHost:
    return PluginHost(autoload=False, extra_plugins=list(plugins))


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backend_choice, "_warned", set())


@pytest.fixture
def vllm_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend the ``vllm`` module is importable (the double stands in for the backend)."""
    monkeypatch.setattr(backend_choice, "GPU_CANDIDATES", (("llama_cpp", None), ("vllm", None)))


# -- the default ---------------------------------------------------------------------------------


def test_backend_auto_is_the_default() -> None:
    assert ModelConfig().backend == "auto"
    assert ModelConfig().device == "auto"


def test_on_the_cpu_auto_is_llama_cpp() -> None:
    choice = choose_backend(ModelConfig(), host(CPU_DEVICE, ("llama_cpp", llama_cpp)))
    assert choice.config.backend == "llama_cpp"
    assert choice.config.device == "cpu"
    assert choice.device is not None and choice.device.kind == "cpu"


def test_on_the_cpu_auto_is_llama_cpp_even_with_vllm_installed(vllm_installed: None) -> None:
    plugins = host(CPU_DEVICE, ("llama_cpp", llama_cpp), VLLM_DOUBLE)
    assert choose_backend(ModelConfig(), plugins).config.backend == "llama_cpp"


def test_device_cpu_with_a_gpu_present_is_llama_cpp_on_the_cpu() -> None:
    plugins = host(*CPU_ONLY, GPU_DOUBLE, VLLM_DOUBLE)
    choice = choose_backend(ModelConfig(device="cpu"), plugins)
    assert (choice.config.backend, choice.config.device) == ("llama_cpp", "cpu")


# -- on a GPU ------------------------------------------------------------------------------------


def test_on_a_gpu_llama_cpp_wins_when_its_build_can_offload(vllm_installed: None) -> None:
    offloading = _plugin("llama_double", "register_backends", {"llama_cpp": OffloadingLlamaDouble})
    choice = choose_backend(ModelConfig(), host(CPU_DEVICE, GPU_DOUBLE, offloading))
    assert (choice.config.backend, choice.config.device) == ("llama_cpp", "cuda")
    assert choice.device is not None and choice.device.name == "GPU double"


@needs_cpu_build
def test_on_a_gpu_a_cpu_build_of_llama_cpp_gives_way_to_vllm(vllm_installed: None) -> None:
    choice = choose_backend(ModelConfig(), host(*CPU_ONLY, GPU_DOUBLE, VLLM_DOUBLE))
    assert (choice.config.backend, choice.config.device) == ("vllm", "cuda")
    assert "vLLM" in choice.reason


@needs_cpu_build
def test_on_a_gpu_nothing_that_can_use_it_is_a_startup_error_naming_both_installs() -> None:
    with pytest.raises(ConfigError) as exc:
        choose_backend(ModelConfig(name="m"), host(*CPU_ONLY, GPU_DOUBLE))
    message = str(exc.value)
    assert message.startswith("models.m.backend: auto found no backend that can use the cuda")
    assert "llama_cpp: this llama-cpp-python build cannot offload to a GPU" in message
    assert "vllm: " in message
    assert 'CMAKE_ARGS="-DGGML_CUDA=on"' in message
    assert "pip install 'inferflux[cuda]'" in message
    assert "device: cpu" in message
    assert exc.value.param == "models.m.backend"


def test_a_backend_check_that_raises_is_reported_not_raised() -> None:
    class BrokenCheckDouble(LlamaCppBackend):
        """A test double whose device check raises."""

        @classmethod
        def device_problem(cls, device: DeviceInfo) -> str | None:
            raise RuntimeError("boom")

    broken = _plugin("broken", "register_backends", {"llama_cpp": BrokenCheckDouble})
    with pytest.raises(ConfigError, match="its device check raised RuntimeError: boom"):
        choose_backend(ModelConfig(), host(CPU_DEVICE, GPU_DOUBLE, broken))


# -- named backends ------------------------------------------------------------------------------


def test_a_named_step_backend_keeps_its_name_and_gets_its_device() -> None:
    config = ModelConfig(backend="llama_cpp")
    choice = choose_backend(config, host(CPU_DEVICE, ("llama_cpp", llama_cpp)))
    assert choice.config is config
    assert choice.device is not None and choice.device.kind == "cpu"


def test_a_named_request_backend_detects_no_device() -> None:
    GpuDoubleContext.detections = 0
    config = ModelConfig(backend="vllm", device="auto")
    choice = choose_backend(config, host(GPU_DOUBLE, VLLM_DOUBLE))
    assert choice.config is config and choice.device is None
    assert GpuDoubleContext.detections == 0


# -- the warning when a GPU extra is installed but no GPU was found -------------------------------


def test_a_gpu_extra_without_its_gpu_warns_once_and_serves_on_the_cpu(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(backend_choice, "unused_gpu_extras", lambda present: ["cuda"])
    plugins = host(("devices", devices), LLAMA)
    with caplog.at_level(logging.WARNING, logger="inferflux_core.engine.backend_choice"):
        first = choose_backend(ModelConfig(name="a"), plugins)
        choose_backend(ModelConfig(name="b"), plugins)
    assert first.config.backend == "llama_cpp"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith(
        "inferflux[cuda] is installed but no CUDA device was found; serving on CPU with llama.cpp"
    )
    if not plugins.get("device_contexts", "cuda")().detect().present:
        assert "no NVIDIA GPU found" in warnings[0]


def test_no_warning_when_the_cpu_was_asked_for(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(backend_choice, "unused_gpu_extras", lambda present: ["cuda"])
    with caplog.at_level(logging.WARNING):
        choose_backend(ModelConfig(device="cpu"), host(*CPU_ONLY))
    assert "is installed but" not in caplog.text


def test_plugins_check_reports_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "unused_gpu_extras", lambda present: ["cuda"])
    (problem,) = devices.self_check()
    assert problem.startswith("inferflux[cuda] is installed but no CUDA device was found")
    assert problem.endswith("`device: auto` serves on CPU with llama.cpp")


REQUIRES = [
    'llama-cpp-python==0.3.36; extra == "cpu"',
    'llama-cpp-python==0.3.36; extra == "cuda"',
    "vllm>=0.10; platform_system == 'Linux' and extra == 'cuda'",
    'nvidia-ml-py>=12; platform_system != "Darwin" and extra == "cuda"',
    'gguf>=0.10; extra == "cuda"',
    'amdsmi>=6; platform_system == "NoSuchOS" and extra == "rocm"',
]


def test_an_extras_requirements_follow_its_platform_markers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("platform.system", lambda: "Linux")
    assert extra_requirements("cuda", REQUIRES) == [
        "llama-cpp-python",
        "vllm",
        "nvidia-ml-py",
        "gguf",
    ]
    monkeypatch.setattr("platform.system", lambda: "Darwin")
    assert extra_requirements("cuda", REQUIRES) == ["llama-cpp-python", "gguf"]
    assert extra_requirements("rocm", REQUIRES) == []
    assert extra_requirements("cpu", REQUIRES) == ["llama-cpp-python"]


def test_this_venv_has_the_cpu_extra_and_not_the_cuda_one() -> None:
    assert extra_installed("cpu")
    assert not extra_installed("no-such-extra")
    assert not extra_installed("cpu", distribution="no-such-distribution")


# -- the real CPU path ---------------------------------------------------------------------------


def test_the_engine_serves_the_default_model_with_the_resolved_backend() -> None:
    settings = Settings(models=[ModelConfig(context_length=256, max_sequences=1)])
    engine = Engine(settings, plugins=host(*CPU_ONLY, ("schedulers", schedulers)))
    engine.load()
    try:
        (model,) = engine.models.values()
        assert model.config.backend == "llama_cpp" and model.config.device == "cpu"
        assert engine.view.status(model.name).backend == "llama_cpp"
    finally:
        engine.unload()


def test_inferflux_config_shows_the_resolved_backend_and_its_options() -> None:
    (entry,) = effective_config(Settings(), host(CPU_DEVICE, ("llama_cpp", llama_cpp)))["models"]
    assert entry["backend"] == "llama_cpp"
    assert entry["options"]["n_gpu_layers"] is None and entry["options"]["split_mode"] == "layer"


@needs_cpu_build
def test_the_engine_hands_a_gpu_model_to_vllm_with_the_gpu_device(vllm_installed: None) -> None:
    EchoRequestBackend.instances.clear()
    settings = Settings(models=[ModelConfig(name="m")])
    engine = Engine(settings, plugins=host(*CPU_ONLY, GPU_DOUBLE, VLLM_DOUBLE))
    engine.load()
    try:
        (backend,) = EchoRequestBackend.instances
        assert backend.spec.device == "cuda" and backend.started
        assert engine.view.status("m").backend == "vllm"
    finally:
        engine.unload()
