"""The layer order, the plugin boundaries and the absence of import cycles are checked here.

The contracts live in ``pyproject.toml`` (``[tool.importlinter]``); this runs them with
import-linter, and adds a module-level cycle check (a package's ``__init__`` counts as a
module of its own, which import-linter's sibling check does not look at).
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import grimp

ROOT = Path(__file__).resolve().parents[2]
ROOT_PACKAGES = ("inferflux_core", "inferflux_plugins")


def importlinter_config() -> dict[str, Any]:
    """The ``[tool.importlinter]`` table of pyproject.toml."""
    with (ROOT / "pyproject.toml").open("rb") as file:
        config: dict[str, Any] = tomllib.load(file)["tool"]["importlinter"]
    return config


def contract(contract_id: str) -> dict[str, Any]:
    """The import-linter contract with this ``id``."""
    (found,) = [c for c in importlinter_config()["contracts"] if c["id"] == contract_id]
    return found


def bundled_plugin_modules() -> list[str]:
    """The module of every bundled plugin: the ``inferflux`` entry points of pyproject.toml."""
    with (ROOT / "pyproject.toml").open("rb") as file:
        entry_points: dict[str, str] = tomllib.load(file)["project"]["entry-points"]["inferflux"]
    return sorted(entry_points.values())


def covers(expression: str, module: str) -> bool:
    """Whether an import-linter module expression (``a.b`` or ``a.b.*``) names ``module``."""
    if expression.endswith(".*"):
        parent, _, _ = module.rpartition(".")
        return parent == expression[: -len(".*")]
    return module == expression


def test_the_import_contracts_are_kept() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from importlinter.cli import lint_imports_command as command; "
            "command.main(['--no-cache', '--no-logo', 'pyproject.toml'])",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_contracts_cover_the_packages_this_test_builds() -> None:
    assert tuple(importlinter_config()["root_packages"]) == ROOT_PACKAGES
    assert contract("no-cycles")["ancestors"] == list(ROOT_PACKAGES)


def test_every_bundled_plugin_is_in_the_independence_contract() -> None:
    expressions = contract("plugins-independent")["modules"]
    missing = [m for m in bundled_plugin_modules() if not any(covers(e, m) for e in expressions)]
    assert not missing, f"add to the plugins-independent contract in pyproject.toml: {missing}"


def test_no_module_imports_itself_back() -> None:
    graph = grimp.build_graph(*ROOT_PACKAGES)
    for ignored in contract("no-cycles").get("ignore_imports", []):
        importer, _, imported = (part.strip() for part in ignored.partition("->"))
        graph.remove_import(importer=importer, imported=imported)
    cycles = []
    for module in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if imported.startswith(ROOT_PACKAGES) and graph.chain_exists(imported, module):
                back = graph.find_shortest_chain(imported, module) or ()
                cycles.append(" -> ".join((module, *back)))
    assert not cycles, "import cycles:\n" + "\n".join(cycles)
