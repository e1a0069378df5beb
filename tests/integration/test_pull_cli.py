"""``inferflux pull / list / show / rm`` against a loopback file server and a temp registry."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from inferflux_core.cli.main import main
from tests.pull_server import PullServer, small_gguf

MODEL = small_gguf(1024 * 1024)
DIGEST = hashlib.sha256(MODEL).hexdigest()
LONG_NAME = "a-model-name-long-enough-to-be-cut-short-by-a-narrow-table.q4_k"


@pytest.fixture
def files() -> Iterator[PullServer]:
    server = PullServer(files={"/Tiny-Model.gguf": MODEL})
    yield server
    server.stop()


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "registry"
    monkeypatch.setenv("INFERFLUX_REGISTRY__PATH", str(root))
    return root


def test_pull_list_show_rm(
    files: PullServer, registry: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["pull", files.url("/Tiny-Model.gguf"), "--sha256", DIGEST]) == 0
    out, err = capsys.readouterr()
    assert f"pulled tiny-model: 1.0 MB, sha256 {DIGEST}" in out
    assert "registry:tiny-model" in out
    assert f"pulling {files.url('/Tiny-Model.gguf')}: 1.0 MB of 1.0 MB (100%)" in err
    assert main(["pull", files.url("/Tiny-Model.gguf"), "--name", LONG_NAME]) == 0
    capsys.readouterr()

    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "size", "quantization", "architecture", "context", "pulled"]
    rows = sorted(line.split()[:5] for line in lines[1:])
    columns = ["1.0", "MB", "Q4_K_M", "llama"]
    assert rows == sorted([[LONG_NAME, *columns], ["tiny-model", *columns]])
    assert main(["list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [m["name"] for m in listed] == sorted([LONG_NAME, "tiny-model"])

    assert main(["show", "tiny-model", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown == next(m for m in listed if m["name"] == "tiny-model")
    assert shown["sha256"] == DIGEST and shown["context_length"] == 4096
    assert main(["show", "tiny-model"]) == 0
    text = capsys.readouterr().out
    assert "license            mit" in text
    assert f"path               {registry / 'tiny-model' / 'model.gguf'}" in text

    assert main(["rm", "tiny-model"]) == 0
    assert main(["rm", "tiny-model"]) == 1
    assert main(["show", "tiny-model"]) == 2
    assert "not in the registry" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--name", "../escape"], "invalid model name '../escape'"),
        (["--sha256", "0" * 64], "sha256 mismatch"),
        (["--sha256", "xyz"], "invalid sha256 digest"),
    ],
)
def test_a_refused_pull_exits_2_with_one_line_and_registers_nothing(
    files: PullServer,
    registry: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    assert main(["pull", files.url("/Tiny-Model.gguf"), *argv]) == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith("inferflux: error: ") and message in last
    assert main(["list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_on_a_terminal_pull_draws_a_rich_progress_bar(files: PullServer, registry: Path) -> None:
    import os
    import pty
    import subprocess
    import sys

    files.slow["/Tiny-Model.gguf"] = 0.05  # long enough for the bar to be drawn
    leader, follower = pty.openpty()
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "inferflux_core.cli.main",
                "pull",
                files.url("/Tiny-Model.gguf"),
            ],
            stdout=subprocess.PIPE,
            stderr=follower,
            env={**os.environ, "COLUMNS": "100", "TERM": "xterm"},
            timeout=60,
            check=False,
        )
        os.close(follower)
        drawn = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(leader)
    assert done.returncode == 0, drawn
    assert b"pulling http" not in drawn  # not the plain lines
    assert "━".encode() in drawn and b"MB" in drawn
    assert b"pulled tiny-model" in done.stdout
