"""Plugin loading: names are unique, failures name the plugin, entry points are honoured."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from inferflux_core.contracts import DeviceContext, DeviceInfo
from inferflux_core.errors import PluginError
from inferflux_core.hookspecs import hookimpl
from inferflux_core.plugins import TRACE_ENV, PluginHost


class _FakeDevice(DeviceContext):
    """A test double device context."""

    kind = "cpu"

    def detect(self) -> DeviceInfo:
        return DeviceInfo(kind="cpu", present=True)


class _ClashingPlugin:
    @hookimpl
    def register_device_contexts(self) -> dict[str, type[DeviceContext]]:
        return {"cpu": _FakeDevice}


class _RaisingPlugin:
    @hookimpl
    def register_backends(self) -> dict[str, type]:
        raise RuntimeError("boom")


def test_bundled_plugins_load_through_entry_points() -> None:
    host = PluginHost()
    assert {"devices", "llama_cpp", "schedulers"} <= set(host.records)
    assert host.records["llama_cpp"].distribution == "inferflux"
    assert "llama_cpp" in host.names("backends")
    assert "continuous" in host.names("schedulers")
    assert set(host.names("device_contexts")) >= {"cpu", "cuda", "rocm", "metal"}


def test_duplicate_name_is_an_error_naming_both_plugins() -> None:
    with pytest.raises(PluginError) as caught:
        PluginHost(extra_plugins=[("clasher", _ClashingPlugin())])
    assert "'devices'" in caught.value.message and "'clasher'" in caught.value.message


def test_plugin_raising_in_a_hook_is_named() -> None:
    with pytest.raises(PluginError, match="'raiser' failed in hook register_backends"):
        PluginHost(extra_plugins=[("raiser", _RaisingPlugin())])


def test_disabled_plugin_is_not_loaded() -> None:
    host = PluginHost(disable=["transports"])
    assert "transports" not in host.records
    assert host.names("kv_transports") == []


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(PluginError, match="known: continuous"):
        PluginHost().get("schedulers", "nope")


def _broken_distribution(root: Path) -> None:
    dist = root / "broken_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[inferflux]\nbroken = broken_plugin_mod\n")
    (root / "broken_plugin_mod.py").write_text("raise ImportError('missing dependency xyz')\n")


def test_plugin_that_fails_to_import_stops_startup_naming_it(tmp_path: Path) -> None:
    _broken_distribution(tmp_path)
    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(PluginError) as caught:
            PluginHost()
    finally:
        sys.path.remove(str(tmp_path))
    message = caught.value.message
    assert "'broken'" in message and "broken-plugin" in message and "xyz" in message


def test_cli_reports_a_broken_plugin_and_exits_cleanly(tmp_path: Path) -> None:
    _broken_distribution(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "inferflux_core.cli.main", "plugins"],
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "plugin 'broken'" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_lists_plugins_with_their_distribution() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "inferflux_core.cli.main", "plugins", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    import json

    records = {r["name"]: r for r in json.loads(result.stdout)}
    assert records["llama_cpp"]["registered"] == {"backends": ["llama_cpp"]}
    assert records["schedulers"]["distribution"] == "inferflux"


class _Backends:
    """A test double plugin registering two backends."""

    def __init__(self, *names: str) -> None:
        self.names = names

    @hookimpl
    def register_backends(self) -> dict[str, type]:
        return {name: _FakeDevice for name in self.names}


class _Sink:
    """A test double request sink that keeps what it sees, or raises when ``broken``."""

    def __init__(self, broken: bool = False) -> None:
        self.broken = broken
        self.seen: list[dict[str, Any]] = []

    @hookimpl
    def on_request_finished(self, record: dict[str, Any]) -> None:
        if self.broken:
            raise ValueError("sink down")
        self.seen.append(record)


def _traced(caplog: pytest.LogCaptureFixture, *parts: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "inferflux_core.plugins" and all(p in r.getMessage() for p in parts)
    ]


def test_trace_env_logs_every_hook_call_with_arguments_and_results(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(TRACE_ENV, "1")
    plugins = [("two", _Backends("alpha", "beta")), ("sink", _Sink()), ("bad", _Sink(True))]
    with caplog.at_level(logging.WARNING, logger="inferflux_core.plugins"):
        host = PluginHost(autoload=False, extra_plugins=plugins)
        host.notify("on_request_finished", record={"status": 201})
    assert _traced(caplog, "hook register_backends()", "plugins ['two']")
    [returned] = _traced(caplog, "hook register_backends in ['two'] returned")
    assert "'alpha'" in returned and "'beta'" in returned
    assert _traced(caplog, "hook on_request_finished(record={'status': 201})", "['sink']")
    assert _traced(caplog, "hook on_request_finished in ['sink'] returned []")
    assert _traced(caplog, "hook on_request_finished in ['bad'] raised", "sink down")


def test_no_trace_without_the_env(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(TRACE_ENV, raising=False)
    with caplog.at_level(logging.DEBUG, logger="inferflux_core.plugins"):
        PluginHost(autoload=False, extra_plugins=[("two", _Backends("alpha"))])
    assert not _traced(caplog, "hook register_backends")


def test_a_hook_wrapper_wraps_each_plugins_answer_to_a_collect_hook() -> None:
    seen: list[list[dict[str, Any]]] = []

    class Wrapper:
        """Sees every register_backends answer and hides the backend named ``beta``."""

        @hookimpl(wrapper=True)
        def register_backends(self) -> Generator[None, list[dict[str, Any]], Any]:
            answers = yield
            seen.append(answers)
            return [{k: v for k, v in a.items() if k != "beta"} for a in answers]

    host = PluginHost(
        autoload=False,
        extra_plugins=[
            ("one", _Backends("alpha", "beta")),
            ("two", _Backends("gamma")),
            ("w", Wrapper()),
        ],
    )
    assert host.names("backends") == ["alpha", "gamma"]
    assert host.plugin_of("backends", "gamma") == "two"
    assert sorted(sorted(answer) for [answer] in seen) == [["alpha", "beta"], ["gamma"]]
    assert host.records["w"].hooks == ["register_backends"]


def test_a_failure_inside_a_hook_wrapper_names_the_plugin_and_the_wrapper() -> None:
    class Wrapper:
        @hookimpl(wrapper=True)
        def on_startup(self, engine: Any) -> Generator[None, Any, Any]:
            return (yield)

    class Failing:
        @hookimpl
        def on_startup(self, engine: Any) -> None:
            raise RuntimeError("no licence")

    host = PluginHost(autoload=False, extra_plugins=[("w", Wrapper()), ("f", Failing())])
    with pytest.raises(PluginError) as caught:
        host.call_each("on_startup", engine=None)
    assert caught.value.message == (
        "plugin 'f' failed in hook on_startup (inside the hook wrappers of 'w'): "
        "RuntimeError: no licence"
    )


def test_a_sink_failing_does_not_stop_the_others() -> None:
    first, second = _Sink(), _Sink()
    host = PluginHost(
        autoload=False,
        extra_plugins=[("first", first), ("bad", _Sink(True)), ("second", second)],
    )
    host.notify("on_request_finished", record={"n": 1})
    assert first.seen == second.seen == [{"n": 1}]
    assert host.has_implementations("on_request_finished")
    assert not host.has_implementations("on_startup")
