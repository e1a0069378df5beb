"""Every Python package in the source tree is listed in pyproject.toml, so a wheel ships it."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def source_packages() -> set[str]:
    """Dotted names of every folder with an ``__init__.py`` under the two import roots."""
    found = set()
    for root, name in (("inferflux_core", "inferflux_core"), ("plugins", "inferflux_plugins")):
        for init in (ROOT / root).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / root)
            found.add(".".join((name, *relative.parts)))
    return found


def test_every_package_is_listed_in_pyproject() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    assert source_packages() - listed == set()
    assert listed - source_packages() == set()
