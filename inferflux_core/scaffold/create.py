"""Writing a new plugin package from the templates next to this module.

Each kind gets a ``pyproject.toml`` with the ``inferflux`` entry point, a package whose
``__init__`` declares ``INFERFLUX_HOOKSPEC_VERSION`` and implements the kind's register hook,
a module with a working implementation (derived from the bundled one where there is one), a
README and a test file that runs the conformance kit on the installed plugin.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template

from inferflux_core.errors import ConfigError
from inferflux_core.hookspecs import HOOKSPEC_VERSION

NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,39}")


@dataclass(frozen=True, slots=True)
class PluginKind:
    """What differs between kinds: the hook, the contract, the module and class names."""

    kind: str
    hook: str
    contract: str
    module: str
    class_suffix: str
    package_data: tuple[str, ...] = ()


KINDS = {
    kind.kind: kind
    for kind in (
        PluginKind(
            "backend", "register_backends", "StepBackend", "backend", "Backend", ("model.json",)
        ),
        PluginKind(
            "engine-backend",
            "register_backends",
            "RequestBackend",
            "engine_backend",
            "EngineBackend",
        ),
        PluginKind("scheduler", "register_schedulers", "Scheduler", "scheduler", "Scheduler"),
        PluginKind("policy-store", "register_policy_stores", "PolicyStore", "store", "PolicyStore"),
        PluginKind("transport", "register_kv_transports", "KVTransport", "transport", "Transport"),
        PluginKind("guardrail", "register_guardrails", "Guardrail", "guardrail", "Guardrail"),
        PluginKind("device", "register_device_contexts", "DeviceContext", "device", "Context"),
    )
}


def create_plugin(kind: str, name: str, directory: Path) -> Path:
    """Write the ``kind`` plugin ``name`` into ``directory/inferflux-<name>``; return that folder.

    Raises :class:`~inferflux_core.errors.ConfigError` for an unknown kind, a name that is not
    a lower-case Python identifier, or a folder that exists already (never overwritten).
    """
    if kind not in KINDS:
        raise ConfigError(f"unknown plugin kind {kind!r} (kinds: {', '.join(KINDS)})")
    if not NAME_PATTERN.fullmatch(name):
        raise ConfigError(
            f"plugin name {name!r} is not valid: use 1-40 lower-case letters, digits and "
            "underscores, starting with a letter (it becomes a Python package name)"
        )
    spec = KINDS[kind]
    target = directory / f"inferflux-{name.replace('_', '-')}"
    if target.exists():
        raise ConfigError(f"{target} already exists; choose another name or --dir")
    values = _values(spec, name)
    package = target / values["package"]
    files = {
        target / "pyproject.toml": "pyproject.toml",
        target / "README.md": "README.md",
        package / "__init__.py": "__init__.py",
        package / "py.typed": None,
        package / f"{spec.module}.py": f"{spec.module}.py",
        target / "tests" / f"test_{name}.py": f"test_{spec.module}.py",
    }
    if spec.package_data:
        files[package / "model.json"] = "model.json"
    package.mkdir(parents=True)
    (target / "tests").mkdir()
    for path, template in files.items():
        path.write_text(_render(template, values) if template else "")
    return target


def _values(spec: PluginKind, name: str) -> dict[str, str]:
    camel = "".join(part.capitalize() for part in name.split("_"))
    data = ", ".join(f'"{item}"' for item in ("py.typed", *spec.package_data))
    return {
        "name": name,
        "kind": spec.kind,
        "dist": f"inferflux-{name.replace('_', '-')}",
        "package": f"inferflux_{name}",
        "module": spec.module,
        "hook": spec.hook,
        "contract": spec.contract,
        "class_name": f"{camel}{spec.class_suffix}",
        "package_data": data,
        "hookspec_version": str(HOOKSPEC_VERSION),
    }


def _render(template: str, values: dict[str, str]) -> str:
    text = resources.files(__package__).joinpath("templates", f"{template}.tmpl").read_text()
    return Template(text).substitute(values)
