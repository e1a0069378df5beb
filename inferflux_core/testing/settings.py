"""What the kit tests: a plugin's registered name and the options it is constructed with."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class PluginSettings:
    """A plugin name in one family, and its options (``{tmp}`` allowed in string values)."""

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BackendSettings:
    """A backend name, its model source and options, and the bounds it is loaded with."""

    name: str
    model_source: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    context_length: int = 512
    max_sequences: int = 4
