"""Plugin loading: names are unique, failures name the plugin, entry points are honoured."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from inferflux_core.contracts import DeviceContext, DeviceInfo
from inferflux_core.errors import PluginError
from inferflux_core.hookspecs import hookimpl
from inferflux_core.plugins import PluginHost


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
