"""GBNF for integers and numbers within bounds, which llama-cpp-python's converter ignores.

Integers take any bounds. Numbers take inclusive bounds that are whole numbers: the grammar
splits a number into its whole part, chosen from a digit range, and a free fraction, so
``0 <= x <= 100`` becomes "0..99 with any fraction, or exactly 100".
"""

from __future__ import annotations

import math
from collections.abc import Callable

#: Most digits of a bounded value; the converter's unbounded numbers allow 16.
MAX_DIGITS = 15
FRACTION = '("." [0-9]{1,15})?'


class BoundsError(ValueError):
    """Bounds the grammar cannot express."""


def integer_rule(low: int | None, high: int | None) -> str:
    """GBNF matching the JSON integers in ``[low, high]`` (``None``: unbounded)."""
    return _signed(low, high, _natural, smallest_negative=1)


def number_rule(low: int | None, high: int | None) -> str:
    """GBNF matching JSON numbers (no exponent) in ``[low, high]``, bounds whole numbers."""
    return _signed(low, high, _up_to, smallest_negative=0)


def _signed(
    low: int | None,
    high: int | None,
    magnitudes: Callable[[int, int | None], str],
    *,
    smallest_negative: int,
) -> str:
    """The non-negative values, then ``"-"`` and the magnitudes of the negative ones."""
    parts = []
    if high is None or high >= 0:
        parts.append(magnitudes(max(low, 0) if low is not None else 0, high))
    if low is None or low < 0:
        magnitude_low = max(-high, smallest_negative) if high is not None else smallest_negative
        parts.append(f'"-" {magnitudes(magnitude_low, -low if low is not None else None)}')
    return _alternatives(parts)


def integer_bounds(schema: dict[str, object]) -> tuple[int | None, int | None]:
    """The tightest whole-number ``[low, high]`` an integer schema's bounds allow."""
    low = _tightest(
        max,
        _whole(schema.get("minimum"), math.ceil),
        _whole(schema.get("exclusiveMinimum"), lambda v: math.floor(v) + 1),
    )
    high = _tightest(
        min,
        _whole(schema.get("maximum"), math.floor),
        _whole(schema.get("exclusiveMaximum"), lambda v: math.ceil(v) - 1),
    )
    return _checked(low, high)


def number_bounds(schema: dict[str, object]) -> tuple[int | None, int | None]:
    """A number schema's ``[minimum, maximum]``; only whole, inclusive bounds are supported."""
    for keyword in ("exclusiveMinimum", "exclusiveMaximum"):
        if keyword in schema:
            raise BoundsError(
                f"'{keyword}' on a number is not supported (use 'minimum'/'maximum', or an integer)"
            )
    bounds = []
    for keyword in ("minimum", "maximum"):
        value = schema.get(keyword)
        if value is not None and float(value) != math.floor(float(value)):  # type: ignore[arg-type]
            raise BoundsError(
                f"'{keyword}': {value} on a number is not supported (only whole-number bounds)"
            )
        bounds.append(None if value is None else int(value))  # type: ignore[call-overload]
    return _checked(bounds[0], bounds[1])


def _up_to(low: int, high: int | None) -> str:
    """Non-negative numbers in ``[low, high]``: a whole part below ``high`` with any fraction,
    or ``high`` itself."""
    if high is None:
        return f"{_natural(low, None)} {FRACTION}"
    parts = [f"{_natural(low, high - 1)} {FRACTION}"] if low <= high - 1 else []
    parts.append(f'"{high}"')
    return _alternatives(parts)


def _natural(low: int, high: int | None) -> str:
    """Whole numbers in ``[low, high]`` (``low >= 0``), without leading zeros."""
    top_digits = len(str(high)) if high is not None else MAX_DIGITS
    parts = []
    for n_digits in range(len(str(low)), top_digits + 1):
        first = low if n_digits == len(str(low)) else 10 ** (n_digits - 1)
        last = high if high is not None and n_digits == top_digits else 10**n_digits - 1
        if first <= last:
            parts.append(_same_length(str(first), str(last)))
    return _alternatives(parts)


def _same_length(first: str, last: str) -> str:
    """Digit strings of one length from ``first`` to ``last``."""
    if first == last:
        return f'"{first}"'
    rest = len(first) - 1
    if first[0] == last[0]:
        return f'"{first[0]}" {_same_length(first[1:], last[1:])}'
    if rest == 0:
        return f"[{first}-{last}]"
    if first[1:] == "0" * rest and last[1:] == "9" * rest:
        return f"[{first[0]}-{last[0]}] [0-9]{{{rest}}}"
    parts = [f'"{first[0]}" {_same_length(first[1:], "9" * rest)}']
    if int(last[0]) - int(first[0]) > 1:
        parts.append(f"[{int(first[0]) + 1}-{int(last[0]) - 1}] [0-9]{{{rest}}}")
    parts.append(f'"{last[0]}" {_same_length("0" * rest, last[1:])}')
    return _alternatives(parts)


def _alternatives(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else "(" + " | ".join(parts) + ")"


def _whole(value: object, rounding: object) -> int | None:
    if value is None:
        return None
    return int(rounding(float(value)))  # type: ignore[arg-type, operator]


def _tightest(pick: object, *values: int | None) -> int | None:
    present = [v for v in values if v is not None]
    return pick(present) if present else None  # type: ignore[operator]


def _checked(low: int | None, high: int | None) -> tuple[int | None, int | None]:
    limit = 10**MAX_DIGITS - 1
    for value in (low, high):
        if value is not None and abs(value) > limit:
            raise BoundsError(f"bounds beyond ±{limit} are not supported")
    if low is not None and high is not None and low > high:
        raise BoundsError(f"no value lies between the bounds {low} and {high}")
    return low, high
