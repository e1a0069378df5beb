"""``docs/bundled-plugins.md`` lists exactly the keys each bundled plugin takes, with the
defaults the code uses."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, Field

from inferflux_core import docs_gen, docs_options
from inferflux_core.config import PluginsConfig, SchedulerConfig
from inferflux_core.contracts import PluginOptions
from inferflux_core.plugins import PluginHost
from inferflux_plugins.backends.llama_cpp.options import LlamaCppOptions
from inferflux_plugins.backends.openai_upstream.options import OpenAIUpstreamOptions
from inferflux_plugins.guardrails.blocklist import BlocklistGuardrail
from inferflux_plugins.guardrails.opa import OpaGuardrail
from inferflux_plugins.policy.encrypted import EncryptedFilePolicyStore
from inferflux_plugins.policy.memory import MemoryPolicyStore
from inferflux_plugins.schedulers.continuous import ContinuousOptions
from inferflux_plugins.transports.inprocess import InProcessTransport

DOC = Path(__file__).resolve().parents[2] / "docs" / "bundled-plugins.md"
MARKER = re.compile(r"<!-- keys: (\w+) -->\n\| key \| [^\n]*\n\|---[^\n]*\n((?:\|[^\n]*\n)*)")


def documented() -> dict[str, dict[str, str]]:
    """Each marked table: section -> {key: default cell}."""
    tables: dict[str, dict[str, str]] = {}
    for section, rows in MARKER.findall(DOC.read_text(encoding="utf-8")):
        cells = [
            [c.strip() for c in row.strip().strip("|").split("|")] for row in rows.splitlines()
        ]
        tables[section] = {c[0].strip("`"): c[1] for c in cells}
    return tables


def keyword_defaults(cls: type) -> dict[str, Any]:
    """The constructor's keyword parameters and their defaults (``required`` if none)."""
    params = inspect.signature(cls.__init__).parameters.values()  # type: ignore[misc]
    return {
        p.name: "required" if p.default is p.empty else p.default
        for p in params
        if p.kind is p.KEYWORD_ONLY
    }


def model_defaults(model: type[BaseModel]) -> dict[str, Any]:
    """A pydantic model's fields and their defaults (``required`` if none)."""
    return {
        name: "required" if info.is_required() else info.get_default(call_default_factory=True)
        for name, info in model.model_fields.items()
    }


def parse_default(text: str) -> Any:
    """A default as the doc writes it: `yaml`, ``none``, ``required``."""
    if text == "none":
        return None
    if text == "required":
        return text
    assert text.startswith("`") and text.endswith("`"), text
    return yaml.safe_load(text.strip("`"))


CODE: dict[str, dict[str, Any]] = {
    "plugins": model_defaults(PluginsConfig),
    "llama_cpp": model_defaults(LlamaCppOptions),
    "openai_upstream": model_defaults(OpenAIUpstreamOptions),
    "scheduler": model_defaults(SchedulerConfig),
    "continuous": model_defaults(ContinuousOptions),
    "encrypted_file": keyword_defaults(EncryptedFilePolicyStore),
    "blocklist": keyword_defaults(BlocklistGuardrail),
    "opa": keyword_defaults(OpaGuardrail),
}
#: Defaults the doc words rather than prints.
WORDED = {
    ("llama_cpp", "threads"): "usable cores",
    ("llama_cpp", "n_gpu_layers"): "-1 on a GPU device, 0 on cpu",
}


def test_every_section_is_documented() -> None:
    assert set(documented()) == {*CODE, "devices", "memory", "inprocess"}


@pytest.mark.parametrize("section", sorted(CODE))
def test_documented_keys_and_defaults_match_the_code(section: str) -> None:
    table, code = documented()[section], CODE[section]
    assert set(table) == set(code), f"docs/bundled-plugins.md, {section}: keys differ"
    for key, value in code.items():
        if (section, key) in WORDED:
            assert value is None and table[key] == WORDED[section, key]
            continue
        if isinstance(value, tuple):
            value = list(value)
        written = parse_default(table[key])
        assert written == value, f"{section}.{key}: doc says {table[key]}, code {value!r}"


def test_device_kinds_and_priorities_match_the_plugins() -> None:
    host = PluginHost()
    table = documented()["devices"]
    assert set(table) == set(host.names("device_contexts"))
    for kind, priority in table.items():
        assert priority == f"`{host.get('device_contexts', kind).priority}`"


def test_memory_store_takes_no_options() -> None:
    assert documented()["memory"] == {}
    with pytest.raises(TypeError):
        MemoryPolicyStore(path="x")


def test_inprocess_transport_honours_max_pending() -> None:
    assert documented()["inprocess"] == {"max_pending": "`8`"}
    assert InProcessTransport(max_pending=3)._max_pending == 3
    assert InProcessTransport()._max_pending == 8


def test_the_tables_of_plugins_with_an_options_model_are_generated_from_it() -> None:
    guide = DOC.read_text(encoding="utf-8")
    models = docs_options.option_models()
    assert {"plugins", "scheduler", "llama_cpp", "continuous"} <= set(models)
    assert docs_options.render_bundled(guide, models) == guide, (
        f"docs/bundled-plugins.md is out of date: run `{docs_gen.REGENERATE}`"
    )


def test_a_changed_default_changes_the_generated_table() -> None:
    class Options(PluginOptions):
        budget: int = Field(7, description="how much")
        label: str | None = Field(None, json_schema_extra={"doc_default": "the model's name"})
        path: str

    guide = "<!-- keys: demo -->\n| key | default | meaning |\n|---|---|---|\n| `old` | `1` | x |\n"
    rendered = docs_options.render_bundled(guide, {"demo": Options})
    assert rendered.splitlines()[3:] == [
        "| `budget` | `7` | how much |",
        "| `label` | the model's name |  |",
        "| `path` | required |  |",
    ]
