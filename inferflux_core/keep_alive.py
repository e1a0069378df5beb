"""Ollama's ``keep_alive``: how long a model stays loaded after its last request.

A value is a number of seconds or a duration string (``"30s"``, ``"5m"``, ``"1h30m"``,
``"-1"``); ``0`` unloads the model right after the request, a negative value keeps it loaded
forever. :func:`parse_keep_alive` turns one into seconds (``None``: never unload).
"""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import BeforeValidator

#: The longest finite keep_alive accepted (30 days): bounds the arithmetic and the timers.
MAX_KEEP_ALIVE_SECONDS = 30 * 86_400.0
#: A keep_alive as config or a request body carries it.
KeepAliveValue = int | float | str

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0}


def parse_keep_alive(value: KeepAliveValue) -> float | None:
    """Seconds to keep a model loaded after its last request; ``None``: forever.

    Raises ``ValueError`` naming the problem for anything else (a bool, NaN, an unknown unit,
    more than 30 days, a string over 32 characters).
    """
    if isinstance(value, bool):
        raise ValueError("keep_alive must be a duration such as '5m' or a number of seconds")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _parse_duration(value)
    else:
        raise ValueError("keep_alive must be a duration such as '5m' or a number of seconds")
    if math.isnan(seconds):
        raise ValueError("keep_alive must be a number, not NaN")
    if seconds < 0:
        return None
    if seconds > MAX_KEEP_ALIVE_SECONDS:
        raise ValueError(
            f"keep_alive may be at most {MAX_KEEP_ALIVE_SECONDS:.0f} seconds (30 days); "
            "use a negative value to keep the model loaded forever"
        )
    return seconds


def _parse_duration(text: str) -> float:
    stripped = text.strip()
    if len(stripped) > 32 or not stripped:
        raise ValueError(f"keep_alive {text[:40]!r} is not a duration such as '5m' or '30s'")
    sign = -1.0 if stripped.startswith("-") else 1.0
    body = stripped.lstrip("-+")
    try:
        return sign * float(body)
    except ValueError:
        pass
    total, at = 0.0, 0
    for match in _PART.finditer(body):
        if match.start() != at:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        at = match.end()
    if at != len(body) or at == 0:
        raise ValueError(f"keep_alive {text!r} is not a duration such as '5m' or '30s'")
    return sign * total


def describe_keep_alive(seconds: float | None) -> str:
    """``"forever"``, ``"0s"`` or ``"300s"``: a keep_alive for people."""
    if seconds is None:
        return "forever"
    return f"{seconds:g}s"


def request_keep_alive(value: KeepAliveValue | None) -> float | None:
    """A request body's ``keep_alive`` as :class:`~inferflux_core.contracts.InferenceRequest`
    carries it: None when absent, ``-1.0`` for forever, else seconds (ValueError if invalid)."""
    if value is None:
        return None
    seconds = parse_keep_alive(value)
    return -1.0 if seconds is None else seconds


def _request_value(value: object) -> object:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("must be a duration such as '5m' or a number of seconds")
    return request_keep_alive(value)


#: A request body's ``keep_alive`` field (pydantic): seconds, ``-1.0`` for forever, None absent.
RequestKeepAlive = Annotated[float | None, BeforeValidator(_request_value)]
