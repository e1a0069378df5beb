"""Tables go whole to a pipe: ``inferflux plugins | grep NAME`` finds a long plugin name."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pexpect
from rich.text import Text

from inferflux_core.cli.tables import print_table

LONG_NAME = "a_plugin_whose_registered_name_is_far_longer_than_any_terminal_column"


def test_a_pipe_gets_tab_separated_lines_with_every_cell_whole() -> None:
    out = io.StringIO()
    print_table(
        ["plugin", "notes"],
        [[LONG_NAME, "first line\nsecond line"], ["short", Text("OK", style="green")]],
        file=out,
    )
    assert out.getvalue().splitlines() == [
        "plugin\tnotes",
        f"{LONG_NAME}\tfirst line; second line",
        "short\tOK",
    ]


def test_inferflux_plugins_to_a_narrow_pipe_keeps_every_name_whole() -> None:
    # COLUMNS=40: rich used to cut names to fit; `inferflux plugins | grep NAME` missed them.
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERFLUX_")}
    env["COLUMNS"] = "40"
    run = [sys.executable, "-m", "inferflux_core.cli.main", "plugins"]
    listed = subprocess.run(
        [*run, "--json"], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    table = subprocess.run(run, env=env, capture_output=True, text=True, timeout=60, check=True)
    records = json.loads(listed.stdout)
    lines = table.stdout.splitlines()
    assert lines[0].split("\t") == ["plugin", "distribution", "version", "registers", "hooks"]
    rows = {line.split("\t")[0]: line.split("\t") for line in lines[1:]}
    assert set(rows) == {record["name"] for record in records}
    longest = max(records, key=lambda record: len(record["name"]))
    assert len(longest["name"]) > 40 // 5
    assert rows[longest["name"]][1] == longest["distribution"]
    assert rows[longest["name"]][4] == ", ".join(longest["hooks"])


def test_a_terminal_gets_the_boxed_table() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERFLUX_")}
    env.pop("COLUMNS", None)
    child = pexpect.spawn(
        sys.executable,
        ["-m", "inferflux_core.cli.main", "devices"],
        env=env,
        encoding="utf-8",
        timeout=60,
        dimensions=(40, 100),
    )
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert "┏" in child.before and "device" in child.before and "\t" not in child.before
