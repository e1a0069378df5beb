"""The option tables of ``docs/bundled-plugins.md``, generated from the options models.

A table follows a marker ``<!-- keys: NAME -->``. For a NAME with an options model (the core
config sections in :data:`CONFIG_TABLES`, and each bundled plugin in :data:`PLUGIN_TABLES`
that declares ``options_model``), :func:`render_bundled` rewrites the table from the model's
fields: key, default, and the field's ``description``. A default the doc words rather than
prints comes from ``json_schema_extra={"doc_default": ...}``. The prose around the tables,
and the tables of plugins without a model, stay hand-written.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from inferflux_core.config import PluginsConfig, SchedulerConfig
from inferflux_core.contracts.options import options_of
from inferflux_core.plugins import PluginHost

DEFAULT_BUNDLED = Path(__file__).resolve().parents[1] / "docs" / "bundled-plugins.md"
#: Tables generated from core config models: section -> model.
CONFIG_TABLES: dict[str, type[BaseModel]] = {
    "plugins": PluginsConfig,
    "scheduler": SchedulerConfig,
}
#: Tables of bundled plugins: section -> (family, registered name).
PLUGIN_TABLES: dict[str, tuple[str, str]] = {
    "llama_cpp": ("backends", "llama_cpp"),
    "continuous": ("schedulers", "continuous"),
    "memory": ("policy_stores", "memory"),
    "encrypted_file": ("policy_stores", "encrypted_file"),
    "blocklist": ("guardrails", "blocklist"),
    "opa": ("guardrails", "opa"),
    "inprocess": ("kv_transports", "inprocess"),
}
MARKER = re.compile(r"(<!-- keys: (\w+) -->\n)(\| key \|[^\n]*\n\|---[^\n]*\n(?:\|[^\n]*\n)*)")


def option_models(host: PluginHost | None = None) -> dict[str, type[BaseModel]]:
    """Every table with a model behind it: section -> model."""
    host = host or PluginHost()
    models = dict(CONFIG_TABLES)
    for section, (family, name) in PLUGIN_TABLES.items():
        model = options_of(host.get(family, name))
        if model is not None:
            models[section] = model
    return models


def options_table(model: type[BaseModel]) -> str:
    """A Markdown table of ``model``'s fields: key, default, meaning."""
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for name, info in model.model_fields.items():
        lines.append(f"| `{name}` | {default_cell(info)} | {info.description or ''} |")
    return "\n".join(lines) + "\n"


def default_cell(info: FieldInfo) -> str:
    """A field's default as the doc writes it: `yaml`, ``none``, ``required``, or worded."""
    extra = info.json_schema_extra
    if isinstance(extra, dict) and isinstance(extra.get("doc_default"), str):
        return str(extra["doc_default"])
    if info.is_required():
        return "required"
    value = info.get_default(call_default_factory=True)
    return "none" if value is None else f"`{_literal(value)}`"


def render_bundled(text: str, models: dict[str, type[BaseModel]]) -> str:
    """``text`` with every table that has a model regenerated from it."""

    def table(match: re.Match[str]) -> str:
        model = models.get(match.group(2))
        return match.group(0) if model is None else match.group(1) + options_table(model)

    return MARKER.sub(table, text)


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple | dict):
        return json.dumps(value)
    return str(value)
