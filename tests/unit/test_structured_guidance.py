"""JSON Schema → llguidance grammar: what compiles, what is a 400 naming the keyword, caps."""

from __future__ import annotations

import json
from typing import Any

import pytest

from inferflux_core.contracts.generation import OutputConstraint
from inferflux_core.errors import InvalidRequestError
from inferflux_core.structured.guidance import (
    COMPILE_OPTIONS,
    constraint_guidance,
    schema_guidance,
    strict_objects,
)

pytest.importorskip("llguidance")

PARAM = "response_format.json_schema.schema"


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "pattern": "^[a-z]{3}-[0-9]+$"},
        {"oneOf": [{"type": "integer"}, {"type": "string", "format": "email"}]},
        {
            "allOf": [
                {"type": "object", "properties": {"a": {"type": "integer"}}},
                {"required": ["a"]},
            ]
        },
        {"type": "string", "format": "date-time"},
        {"type": "string", "format": "ipv6"},
        {"type": "string", "format": "uri"},
        {"$defs": {"n": {"type": "integer", "minimum": 0}}, "$ref": "#/$defs/n"},
        {"type": "array", "items": {"enum": [1, "a", None]}, "minItems": 1, "maxItems": 4},
    ],
)
def test_schemas_the_gbnf_converter_refuses_compile(schema: dict[str, Any]) -> None:
    grammar = schema_guidance(schema)
    assert json.loads(grammar)["grammars"]


@pytest.mark.parametrize(
    ("schema", "named"),
    [
        ({"not": {"type": "string"}}, "not"),
        ({"type": "array", "uniqueItems": True}, "uniqueItems"),
        ({"type": "string", "format": "no-such-format"}, "no-such-format"),
        ({"$ref": "https://example.com/s.json"}, "https://example.com/s.json"),
        ({"type": "string", "pattern": "a" * 3000}, "pattern"),
        ({"type": "string", "maxLength": 10**12}, "maxLength"),
        ({"type": "wrong"}, "type"),
    ],
)
def test_a_schema_it_cannot_enforce_is_a_400_naming_the_keyword(
    schema: dict[str, Any], named: str
) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        schema_guidance(schema)
    assert caught.value.param == PARAM
    assert named in caught.value.message


def test_lenient_mode_in_the_schema_cannot_drop_a_keyword() -> None:
    schema = {"x-guidance": {"lenient": True}, "not": {"type": "string"}}
    with pytest.raises(InvalidRequestError, match="not"):
        schema_guidance(schema)
    assert COMPILE_OPTIONS["lenient"] is False


def test_objects_without_additional_properties_get_false() -> None:
    schema = strict_objects(
        {
            "type": "object",
            "properties": {"a": {"type": "object", "properties": {"b": {}}}},
            "allOf": [{"properties": {"c": {}}}],
        }
    )
    assert schema["additionalProperties"] is False
    assert schema["properties"]["a"]["additionalProperties"] is False
    assert schema["allOf"][0]["additionalProperties"] is False
    stated = strict_objects({"type": "object", "properties": {}, "additionalProperties": True})
    assert stated["additionalProperties"] is True


def test_a_constraint_names_where_its_schema_came_from() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        constraint_guidance(
            OutputConstraint("json_schema", schema={"not": {}}, param="text.format.schema")
        )
    assert caught.value.param == "text.format.schema"
    assert json.loads(constraint_guidance(OutputConstraint("json_object")))["grammars"]


def test_properties_keep_their_schema_order() -> None:
    first = schema_guidance({"type": "object", "properties": {"b": {}, "a": {}}})
    second = schema_guidance({"type": "object", "properties": {"a": {}, "b": {}}})
    assert first != second
