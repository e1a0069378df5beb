"""Every name ``docs/public-api.md`` lists is importable from the module it is listed under."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

import inferflux_core

DOC = Path(__file__).resolve().parents[2] / "docs" / "public-api.md"
TABLE = re.compile(r"<!-- module: ([\w.]+) -->\n\| name \|[^\n]*\n\|---[^\n]*\n((?:\|[^\n]*\n)*)")


def listed() -> list[tuple[str, str]]:
    """(module, name) for every row of every module table."""
    pairs = []
    for module, rows in TABLE.findall(DOC.read_text(encoding="utf-8")):
        for row in rows.splitlines():
            pairs.append((module, row.strip("|").split("|")[0].strip().strip("`")))
    return pairs


def test_the_doc_lists_the_main_modules() -> None:
    modules = {module for module, _ in listed()}
    assert {"inferflux_core", "inferflux_core.contracts", "inferflux_core.hookspecs"} <= modules
    assert len(listed()) > 60


@pytest.mark.parametrize(("module", "name"), listed(), ids=lambda v: str(v))
def test_listed_name_is_importable(module: str, name: str) -> None:
    assert getattr(importlib.import_module(module), name) is not None


def test_every_contract_is_listed() -> None:
    from inferflux_core import contracts

    documented = {name for module, name in listed() if module == "inferflux_core.contracts"}
    assert documented == set(contracts.__all__)


def test_top_level_exports_are_the_listed_ones_and_the_same_objects() -> None:
    documented = {name for module, name in listed() if module == "inferflux_core"}
    assert documented == set(inferflux_core.__all__)
    from inferflux_core.engine import Engine
    from inferflux_core.hookspecs import hookimpl

    assert inferflux_core.Engine is Engine and inferflux_core.hookimpl is hookimpl
    with pytest.raises(AttributeError):
        _ = inferflux_core.NoSuchName  # type: ignore[attr-defined]
