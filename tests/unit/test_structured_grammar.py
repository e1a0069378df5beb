"""JSON Schema → grammar: bounded numbers, refused keywords, the per-schema cache."""

from __future__ import annotations

import re
import time

import pytest

from inferflux_core.errors import InvalidRequestError
from inferflux_core.structured import schema_grammar
from inferflux_core.structured.gbnf import SCHEMA_GRAMMARS
from inferflux_core.structured.numeric import (
    BoundsError,
    integer_bounds,
    integer_rule,
    number_rule,
)

BOUNDS = [(0, 100), (-5, 5), (-120, -7), (3, None), (None, -3), (None, 42), (17, 2345), (0, 0)]


def as_regex(rule: str) -> re.Pattern[str]:
    """The numeric rules use only literals, classes, groups and ``{m,n}``: regex-compatible."""
    return re.compile(re.sub(r'"([^"]*)"', lambda m: re.escape(m.group(1)), rule).replace(" ", ""))


def within(value: float, low: int | None, high: int | None) -> bool:
    return (low is None or value >= low) and (high is None or value <= high)


@pytest.mark.parametrize(("low", "high"), BOUNDS)
def test_integer_rule_matches_exactly_the_integers_in_bounds(
    low: int | None, high: int | None
) -> None:
    pattern = as_regex(integer_rule(low, high))
    for value in range(-3000, 3000):
        assert bool(pattern.fullmatch(str(value))) == within(value, low, high), value


@pytest.mark.parametrize(("low", "high"), BOUNDS)
def test_number_rule_matches_only_numbers_in_bounds(low: int | None, high: int | None) -> None:
    pattern = as_regex(number_rule(low, high))
    for tenths in range(-30000, 30000, 7):
        text = f"{tenths / 10:.1f}"
        if pattern.fullmatch(text):
            assert within(float(text), low, high), text
    for value in range(-3000, 3000):
        assert bool(pattern.fullmatch(str(value))) == within(value, low, high), value


def test_impossible_bounds_are_refused() -> None:
    with pytest.raises(BoundsError):
        integer_bounds({"minimum": 3, "maximum": 2})


@pytest.mark.parametrize(
    ("schema", "named"),
    [
        ({"type": "string", "pattern": "(a+)+$"}, "pattern"),
        ({"type": "object", "properties": {"a": {"allOf": [{}]}}}, "/properties/a"),
        ({"type": "array", "uniqueItems": True, "items": {}}, "uniqueItems"),
        ({"type": ["string", "null"], "maxLength": 3}, "anyOf"),
        ({"type": "string", "enum": ["a", 1]}, "1"),
        ({"anyOf": [{"type": "string"}], "type": "string"}, "anyOf"),
        ({"type": "object", "properties": {"a": True}}, "boolean"),
        ({"type": "array", "minItems": 2}, "minItems"),
    ],
)
def test_unsupported_keywords_are_refused_by_name(schema: dict[str, object], named: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        schema_grammar(schema)
    assert named in caught.value.message
    assert caught.value.code == "unsupported"


def test_a_catastrophic_pattern_is_refused_without_running_it() -> None:
    started = time.monotonic()
    with pytest.raises(InvalidRequestError):
        schema_grammar({"type": "string", "pattern": "^(a+)+$" * 50})
    assert time.monotonic() - started < 0.1


def test_grammars_are_cached_by_canonical_schema() -> None:
    first = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    same = {"required": ["a"], "properties": {"a": {"type": "integer"}}, "type": "object"}
    schema_grammar(first)
    hits = SCHEMA_GRAMMARS.hits
    assert schema_grammar(first) == schema_grammar(same)
    assert SCHEMA_GRAMMARS.hits == hits + 2


def test_strings_never_hold_raw_control_characters() -> None:
    grammar = schema_grammar({"type": "string"})
    assert r"\x00-\x1F" in grammar
