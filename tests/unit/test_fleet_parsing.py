"""keep_alive durations, the fleet config keys, and the pull stream parser of inferctl."""

from __future__ import annotations

import pytest

from inferflux_core.cli.inferctl_models import (
    plain_columns,
    progress_line,
    pull_events,
    until,
)
from inferflux_core.config import load_config
from inferflux_core.errors import ConfigError
from inferflux_core.keep_alive import parse_keep_alive, request_keep_alive


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (0, 0.0),
        (30, 30.0),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("250ms", 0.25),
        ("2.5", 2.5),
        (-1, None),
        ("-1", None),
        ("-5m", None),
    ],
)
def test_keep_alive_durations(value: int | str, seconds: float | None) -> None:
    assert parse_keep_alive(value) == seconds


@pytest.mark.parametrize(
    "value", ["", "5 minutes", "5x", "m5", "nan", "inf", "1e400", "31d", True, "9" * 40]
)
def test_bad_keep_alive_values_are_refused(value: object) -> None:
    with pytest.raises(ValueError, match="keep_alive"):
        parse_keep_alive(value)  # type: ignore[arg-type]


def test_a_request_keep_alive_keeps_forever_as_a_negative_number() -> None:
    assert request_keep_alive(None) is None
    assert request_keep_alive("-1") == -1.0
    assert request_keep_alive("1m") == 60.0


def test_fleet_config_keys_are_checked() -> None:
    settings = load_config(
        fleet={"max_loaded_models": 2, "default_keep_alive": "5m"},
        models=[{"name": "a", "aliases": ["default"], "keep_alive": 0}],
    )
    assert settings.fleet.default_keep_alive_seconds() == 300.0
    assert settings.models[0].keep_alive_seconds(300.0) == 0.0
    with pytest.raises(ConfigError, match="keep_alive"):
        load_config(models=[{"name": "a", "keep_alive": "soon"}])
    with pytest.raises(ConfigError, match="repeated: a"):
        load_config(models=[{"name": "a"}, {"name": "b", "aliases": ["a"]}])
    with pytest.raises(ConfigError, match="max_loaded_models"):
        load_config(fleet={"max_loaded_models": 1}, models=[{"name": "a"}, {"name": "b"}])


def test_pull_events_are_read_from_data_lines() -> None:
    lines = [
        ": a comment",
        'data: {"status": "pulling", "completed": 10, "total": 100}',
        "",
        'data: {"status": "success", "model": {"name": "m"}}',
    ]
    events = list(pull_events(lines))
    assert [e["status"] for e in events] == ["pulling", "success"]
    assert progress_line(events[0]) == "pulling 10 B / 100 B (10%)"
    assert progress_line({"status": "pulling", "completed": 2_500_000, "total": None}) == (
        "pulling 2 MB"
    )
    with pytest.raises(ValueError, match="not a pull event"):
        list(pull_events(["data: [1, 2]"]))


def test_plain_columns_never_truncate() -> None:
    long = "x" * 200
    lines = plain_columns([["NAME", "STATE"], [long, "ready"]])
    assert lines[1] == f"{long}   ready"
    assert lines[0].startswith("NAME" + " " * 196)


def test_until_reads_like_ollama_ps() -> None:
    assert until(None, None, 0, 0.0) == "Forever"
    assert until(1300.0, 300.0, 0, 1000.0) == "5 minutes from now"
    assert until(1030.0, 300.0, 0, 1000.0) == "30 seconds from now"
    assert until(None, 300.0, 2, 1000.0) == "after its requests"
