"""``inferflux new-plugin``: each kind installs and passes the conformance kit unedited."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from inferflux_core.cli.main import main
from inferflux_core.scaffold import KINDS

pytestmark = pytest.mark.timeout(600)

#: Tests each scaffold's own test file holds, at least (kit tests that skip not counted).
MIN_PASSED = {
    "backend": 15,
    "engine-backend": 9,
    "scheduler": 13,
    "policy-store": 8,
    "transport": 8,
    "guardrail": 3,
    "device": 2,
}


def plugin_name(kind: str) -> str:
    """The registered name the test gives the ``kind`` plugin."""
    return "demo_" + kind.replace("-", "_")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Every kind scaffolded into one folder and installed, without deps, into ``site``."""
    root = tmp_path_factory.mktemp("plugins")
    for kind in KINDS:
        assert main(["new-plugin", kind, plugin_name(kind), "--dir", str(root)]) == 0
    site = root / "site"
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site)]
    if importlib.util.find_spec("wheel") is not None:  # else pip fetches setuptools itself
        command.append("--no-build-isolation")
    projects = sorted(str(p) for p in root.glob("inferflux-demo-*"))
    subprocess.run([*command, *projects], check=True, capture_output=True, timeout=400)
    return root, site


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_new_plugin_passes_its_tests_before_any_edit(
    kind: str, installed: tuple[Path, Path]
) -> None:
    root, site = installed
    project = root / f"inferflux-{plugin_name(kind).replace('_', '-')}"
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    summary = done.stdout.strip().splitlines()[-1]
    assert done.returncode == 0, done.stdout[-3000:]
    passed = int(re.search(r"(\d+) passed", summary).group(1))  # type: ignore[union-attr]
    assert passed >= MIN_PASSED[kind], summary
    assert "failed" not in summary and "error" not in summary, summary


def test_the_installed_plugins_are_listed_by_inferflux_plugins(
    installed: tuple[Path, Path],
) -> None:
    _, site = installed
    done = subprocess.run(
        [sys.executable, "-m", "inferflux_core.cli.main", "plugins", "--json"],
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    for kind in KINDS:
        assert f'"{plugin_name(kind)}"' in done.stdout


def test_an_existing_folder_is_never_overwritten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "inferflux-mine").mkdir()
    (tmp_path / "inferflux-mine" / "keep.txt").write_text("mine")
    assert main(["new-plugin", "scheduler", "mine", "--dir", str(tmp_path)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "inferflux-mine" / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in (tmp_path / "inferflux-mine").iterdir()) == ["keep.txt"]


@pytest.mark.parametrize("name", ["9lives", "My-Plugin", "has space", "", "x" * 41, "déjà"])
def test_an_invalid_name_is_refused_with_exit_status_2(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["new-plugin", "backend", name, "--dir", str(tmp_path)]) == 2
    assert "is not valid" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def run_kit(directory: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """``pytest`` in ``directory`` (no tests of its own) with the kit's ``options``."""
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider"]
    return subprocess.run(
        [*command, *options], cwd=directory, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    ("options", "passed"),
    [
        (["--inferflux-scheduler=continuous", "--inferflux-transport=inprocess"], 22),
        (
            [
                "--inferflux-policy-store=encrypted_file",
                '--inferflux-options={"path": "{tmp}/p.json", "allow_plaintext": true}',
            ],
            13,
        ),
    ],
)
def test_the_kit_runs_from_command_line_options(
    tmp_path: Path, options: list[str], passed: int
) -> None:
    done = run_kit(tmp_path, *options)
    assert done.returncode == 0, done.stdout[-3000:]
    assert re.search(rf"\b{passed} passed\b", done.stdout), done.stdout[-500:]


def test_bad_kit_options_are_a_usage_error(tmp_path: Path) -> None:
    done = run_kit(tmp_path, "--inferflux-scheduler=continuous", "--inferflux-options={")
    assert done.returncode == 4
    assert "--inferflux-options is not valid JSON" in done.stderr
