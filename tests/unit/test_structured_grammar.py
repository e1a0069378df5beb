"""JSON Schema → grammar: bounded numbers, refused keywords, the per-schema cache."""

from __future__ import annotations

import re
import time

import pytest

from inferflux_core.errors import InvalidRequestError
from inferflux_core.structured import schema_grammar
from inferflux_core.structured.cache import BoundedCache, digest
from inferflux_core.structured.gbnf import SCHEMA_GRAMMARS
from inferflux_core.structured.limits import (
    MAX_BOUND,
    MAX_ENUM_VALUES,
    MAX_GRAMMAR_BYTES,
    MAX_GRAMMAR_NESTING,
    MAX_JSON_DEPTH,
    MAX_REPEAT,
    MAX_TOTAL_PROPERTIES,
    check_grammar_size,
    grammar_nesting,
)
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


# -- caps: no schema can make the converter or llama.cpp's parser run away ----------------


def refused(schema: object, param: str = "response_format.json_schema.schema") -> str:
    """The message of the 400 ``schema`` gets; asserts it is one, naming ``param``."""
    with pytest.raises(InvalidRequestError) as caught:
        schema_grammar(schema, param=param)
    assert caught.value.status == 400
    assert caught.value.param == param
    return caught.value.message


@pytest.mark.parametrize(
    ("schema", "field"),
    [
        ({"type": "string", "maxLength": 30000}, "maxLength"),
        ({"type": "string", "maxLength": MAX_REPEAT + 1}, "maxLength"),
        ({"type": "string", "minLength": 10**12}, "minLength"),
        ({"type": "string", "maxLength": 10**12}, "maxLength"),
        ({"type": "string", "maxLength": 1e308}, "maxLength"),
        ({"type": "array", "items": {}, "maxItems": 30000}, "maxItems"),
        ({"type": "array", "items": {}, "minItems": 10**12}, "minItems"),
        ({"type": "object", "properties": {"a": {"type": "string", "maxLength": 2000}}}, "a"),
    ],
)
def test_a_repetition_past_the_cap_is_refused_naming_the_field_and_the_cap(
    schema: dict[str, object], field: str
) -> None:
    message = refused(schema)
    assert field in message
    assert f"cap of {MAX_REPEAT}" in message


def test_a_repetition_at_the_cap_builds_a_grammar_within_the_grammar_caps() -> None:
    for schema in (
        {"type": "string", "maxLength": MAX_REPEAT},
        {"type": "array", "items": {"type": "integer"}, "maxItems": MAX_REPEAT},
        {"type": "string", "minLength": MAX_REPEAT, "maxLength": MAX_REPEAT},
    ):
        grammar = schema_grammar(schema)
        assert len(grammar.encode()) <= MAX_GRAMMAR_BYTES
        assert grammar_nesting(grammar) <= MAX_GRAMMAR_NESTING


@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("minimum", 1e308),
        ("maximum", -1e308),
        ("minimum", 10**400),
        ("exclusiveMaximum", -(10**400)),
        ("maximum", 10**15),
        ("minimum", float("nan")),
        ("maximum", float("inf")),
    ],
)
def test_a_numeric_bound_past_the_cap_is_refused_without_float_overflow(
    keyword: str, value: float
) -> None:
    message = refused({"type": "integer", keyword: value})
    assert keyword in message
    assert f"±{MAX_BOUND}" in message


@pytest.mark.parametrize(
    ("schema", "cap"),
    [
        ({"type": "object", "properties": {f"p{i}": {} for i in range(257)}}, 256),
        ({"enum": list(range(MAX_ENUM_VALUES + 1))}, MAX_ENUM_VALUES),
        ({"anyOf": [{"const": i} for i in range(257)]}, 256),
        ({"type": "array", "prefixItems": [{}] * 257}, 256),
        ({"$defs": {f"d{i}": {} for i in range(513)}, "type": "integer"}, 512),
        ({"type": "object", "properties": {"n" * 300: {}}}, 256),
    ],
)
def test_a_count_past_its_cap_is_refused_naming_the_cap(
    schema: dict[str, object], cap: int
) -> None:
    assert f"cap of {cap}" in refused(schema)


def test_many_properties_just_under_the_repetition_cap_pass_no_grammar_budget() -> None:
    schema = {
        "type": "object",
        "properties": {
            f"p{i}": {"type": "string", "maxLength": MAX_REPEAT - 1} for i in range(200)
        },
    }
    started = time.monotonic()
    assert f"{MAX_GRAMMAR_BYTES} bytes (the cap)" in refused(schema)
    assert time.monotonic() - started < 0.5


def test_nesting_past_the_cap_is_refused_without_recursion() -> None:
    deep: object = {"type": "integer"}
    for _ in range(5000):
        deep = {"type": "array", "items": deep}
    assert f"the cap is {MAX_JSON_DEPTH}" in refused(deep)
    value: object = 1
    for _ in range(5000):
        value = [value]
    assert f"the cap is {MAX_JSON_DEPTH}" in refused({"const": value})


@pytest.mark.parametrize(
    "schema",
    [
        {"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"},
        {"type": "integer", "multipleOf": 3},
        {"type": "object", "minProperties": 10**12},
        {"type": "string", "pattern": "(a+)+$"},
        {"type": "integer", "minimum": 5, "maximum": 1},
        {"type": "object", "properties": {"a": 5}},
        {"type": "object", "properties": [1]},
        True,
        [],
    ],
)
def test_other_hostile_schemas_are_a_400_or_a_grammar_never_a_crash(schema: object) -> None:
    try:
        grammar = schema_grammar(schema)
    except InvalidRequestError as exc:
        assert exc.status == 400
        return
    check_grammar_size(grammar, "response_format")


def test_the_grammar_text_is_capped_in_bytes_and_nesting() -> None:
    with pytest.raises(InvalidRequestError, match=f"cap of {MAX_GRAMMAR_BYTES} bytes") as caught:
        check_grammar_size('root ::= "' + "a" * MAX_GRAMMAR_BYTES + '"', "tool_choice")
    assert caught.value.param == "tool_choice"
    deep = "root ::= " + "(" * (MAX_GRAMMAR_NESTING + 1) + '"a"' + ")" * (MAX_GRAMMAR_NESTING + 1)
    with pytest.raises(InvalidRequestError, match=f"cap of {MAX_GRAMMAR_NESTING}"):
        check_grammar_size(deep, "response_format")


def test_grammar_nesting_skips_literals_classes_and_comments() -> None:
    assert grammar_nesting('root ::= ("(((" [(((] (x)) # (((((\nx ::= "\\"(" (y)') == 2


def test_the_schema_cache_holds_digests_and_is_bounded_in_bytes() -> None:
    schema_grammar({"type": "string", "maxLength": MAX_REPEAT - 7})
    assert all(len(key) == 32 for key in SCHEMA_GRAMMARS._entries)
    assert SCHEMA_GRAMMARS.size_bytes <= SCHEMA_GRAMMARS.max_bytes


def test_a_bounded_cache_drops_the_oldest_past_its_bytes_and_frees_them() -> None:
    freed: list[str] = []
    cache: BoundedCache[str] = BoundedCache(10, 100, on_evict=freed.append)
    for name in ("a", "b", "c"):
        cache.put(digest(name), name, 40)
    assert freed == ["a"]
    assert cache.get(digest("a")) is None
    assert cache.get(digest("b")) == "b"
    cache.put(digest("huge"), "huge", 1000)  # the newest is kept even alone past the bound
    assert cache.get(digest("huge")) == "huge"
    assert freed == ["a", "c", "b"]
    assert len(cache) == 1
    cache.clear()
    assert freed[-1] == "huge"
    assert cache.size_bytes == 0


def test_properties_across_the_schema_are_capped_in_all() -> None:
    schema = {
        "type": "object",
        "properties": {
            f"o{j}": {"type": "object", "properties": {f"p{i}": {} for i in range(250)}}
            for j in range(9)
        },
    }
    started = time.monotonic()
    assert f"more than {MAX_TOTAL_PROPERTIES} properties in all (the cap)" in refused(schema)
    assert time.monotonic() - started < 0.5
