"""``inferflux plugins --check``: load every plugin and run each one's self-check.

Loading problems (an import error, a hook-contract version mismatch, a duplicate name) stop
the command before any check runs, like they stop ``inferflux serve`` (exit 2). Then every
plugin's ``self_check`` hook runs: a plugin that reports problems, or raises, is FAIL (exit 1);
one that declares no ``INFERFLUX_HOOKSPEC_VERSION``, or reports only warnings (sentences
starting with ``"warning: "``), is WARN; the rest are OK (exit 0).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from inferflux_core.hookspecs import WARNING_PREFIX
from inferflux_core.plugins import VERSION_ATTRIBUTE, PluginHost

OK, WARN, FAIL = "OK", "WARN", "FAIL"


@dataclass(slots=True)
class PluginCheck:
    """One plugin's result."""

    name: str
    distribution: str
    status: str
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def check_plugins(host: PluginHost) -> list[PluginCheck]:
    """Every loaded plugin's check result, sorted by name."""
    problems = host.self_check()
    results = []
    for name, record in sorted(host.records.items()):
        warnings = []
        if record.hookspec_version is None:
            warnings.append(
                f"declares no {VERSION_ATTRIBUTE}; a future hook contract change "
                "will not be detected at startup"
            )
        found = []
        for sentence in problems.get(name, []):
            if sentence.startswith(WARNING_PREFIX):
                warnings.append(sentence.removeprefix(WARNING_PREFIX))
            else:
                found.append(sentence)
        status = FAIL if found else WARN if warnings else OK
        results.append(PluginCheck(name, record.distribution, status, found, warnings))
    return results


def print_checks(results: list[PluginCheck], *, as_json: bool = False) -> int:
    """Print the results as a table (or JSON); the exit status: 1 if any failed, else 0."""
    if as_json:
        print(json.dumps([asdict(result) for result in results], indent=2))
    else:
        from rich.text import Text

        from inferflux_core.cli.tables import Cell, print_table

        colours = {OK: "green", WARN: "yellow", FAIL: "red"}
        rows: list[list[Cell]] = [
            [
                result.name,
                result.distribution,
                Text(result.status, style=colours[result.status]),
                "\n".join([*result.problems, *(f"warning: {w}" for w in result.warnings)]),
            ]
            for result in results
        ]
        print_table(["plugin", "distribution", "status", "problems"], rows)
    return 1 if any(result.status == FAIL for result in results) else 0
