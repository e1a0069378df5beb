"""Reading the kit's own command-line options (shared by the pytest plugin and its suites)."""

from __future__ import annotations

import json
from typing import Any

import pytest


def kit_options(config: pytest.Config) -> Any:
    """``--inferflux-options`` parsed; a usage error names the problem."""
    try:
        return json.loads(config.getoption("inferflux_options"))
    except json.JSONDecodeError as exc:
        raise pytest.UsageError(f"--inferflux-options is not valid JSON: {exc}") from None
