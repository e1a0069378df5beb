"""Which JSON Schema keywords structured output enforces, and refusing the rest by name.

The grammar converter understands a subset of JSON Schema. A keyword outside that subset is
refused with a 400 naming it and where it is, never silently dropped: a dropped constraint
would let the output break the schema. Checking happens before anything compiles a regex or
builds a grammar, so a hostile schema (``"pattern": "(a+)+$"``) costs one walk over it.
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, UnknownType

from inferflux_core.errors import InvalidRequestError
from inferflux_core.structured.limits import check_schema_limits

PARAM = "response_format.json_schema.schema"
MAX_DEPTH = 32
#: Keywords that describe a schema and constrain nothing.
ANNOTATIONS = frozenset(
    {"title", "description", "$schema", "$id", "$comment", "default", "examples", "deprecated"}
    | {"readOnly", "writeOnly"}
)
CONSTRAINTS = frozenset(
    {"type", "properties", "required", "additionalProperties", "items", "prefixItems"}
    | {"minItems", "maxItems", "enum", "const", "anyOf", "$ref", "$defs", "definitions"}
    | {"minLength", "maxLength", "format", "minimum", "maximum"}
    | {"exclusiveMinimum", "exclusiveMaximum"}
)
TYPE_CHECKER = Draft202012Validator.TYPE_CHECKER
FORMATS = frozenset({"date", "time", "date-time", "uuid"})
HINTS = {
    "oneOf": "use anyOf",
    "pattern": "regular expressions are not enforced",
    "patternProperties": "list the properties",
}


def check_schema(schema: Any, param: str = PARAM) -> None:
    """400 unless ``schema`` is a valid Draft 2020-12 schema using only supported keywords,
    within every cap of :mod:`.limits`.

    ``param`` names where the schema is in the request, in the error.
    """
    if not isinstance(schema, dict):
        raise InvalidRequestError(f"{param}: must be a JSON object", param=param)
    check_schema_limits(schema, param)
    try:
        _check_node(schema, "", 0)
    except _Unsupported as exc:
        raise InvalidRequestError(f"{param}: {exc}", param=param, code="unsupported") from None
    check_valid_schema(schema, param)


def check_valid_schema(schema: dict[str, Any], param: str) -> None:
    """400 unless ``schema`` is a valid Draft 2020-12 schema (any keywords)."""
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        raise InvalidRequestError(
            f"{param}: not a valid JSON Schema at /{where}: {exc.message}", param=param
        ) from None
    except RecursionError:
        raise InvalidRequestError(
            f"{param}: the schema is nested too deeply", param=param
        ) from None


class _Unsupported(ValueError):
    """A schema feature the grammar cannot enforce; the message says which and where."""


def _refuse(path: str, problem: str) -> _Unsupported:
    return _Unsupported(f"{problem} (at {path or '/'})")


def _check_node(node: Any, path: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise _refuse(path, f"schemas nested deeper than {MAX_DEPTH} levels are not supported")
    if not isinstance(node, dict):
        raise _refuse(path, "a subschema must be an object (boolean schemas are not supported)")
    for keyword in node:
        if keyword not in CONSTRAINTS and keyword not in ANNOTATIONS:
            hint = f"; {HINTS[keyword]}" if keyword in HINTS else ""
            raise _refuse(path, f"the keyword '{keyword}' is not supported{hint}")
    constraints = {k for k in node if k in CONSTRAINTS}
    _check_combinations(node, constraints, path)
    for keyword in ("properties", "$defs", "definitions"):
        children = node.get(keyword, {})
        if not isinstance(children, dict):
            raise _refuse(f"{path}/{keyword}", f"'{keyword}' must be an object")
        for name, child in children.items():
            _check_node(child, f"{path}/{keyword}/{name}", depth + 1)
    for keyword in ("prefixItems", "anyOf"):
        if keyword not in node:
            continue
        children = node[keyword]
        if not isinstance(children, list) or not children:
            raise _refuse(f"{path}/{keyword}", f"'{keyword}' must be a non-empty array")
        for i, child in enumerate(children):
            _check_node(child, f"{path}/{keyword}/{i}", depth + 1)
    if "items" in node:
        _check_node(node["items"], f"{path}/items", depth + 1)
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        _check_node(extra, f"{path}/additionalProperties", depth + 1)


def _check_combinations(node: dict[str, Any], constraints: set[str], path: str) -> None:
    """Refuse combinations the converter would resolve by dropping one side."""
    alone = constraints - {"$defs", "definitions"}
    for keyword in ("$ref", "anyOf"):
        if keyword in alone and len(alone) > 1:
            others = ", ".join(sorted(alone - {keyword}))
            raise _refuse(path, f"'{keyword}' together with {others} is not supported")
    ref = node.get("$ref")
    if ref is not None and not (
        isinstance(ref, str) and (ref.startswith("#/$defs/") or ref.startswith("#/definitions/"))
    ):
        raise _refuse(path, f"$ref {ref!r}: only local references (#/$defs/...) are supported")
    if isinstance(node.get("type"), list) and len(alone) > 1:
        raise _refuse(path, "a list of types together with other keywords; use anyOf")
    if ("enum" in alone or "const" in alone) and alone - {"enum", "const", "type"}:
        raise _refuse(path, "'enum'/'const' together with keywords other than 'type'")
    _check_enum_types(node, path)
    required = node.get("required", [])
    if not isinstance(required, list) or not all(isinstance(n, str) for n in required):
        raise _refuse(path, "'required' must be an array of strings")
    properties = node.get("properties")
    for name in required:
        if not isinstance(properties, dict) or name not in properties:
            raise _refuse(path, f"required property {name!r} is not listed in 'properties'")
    if {"minItems", "maxItems"} & alone and "items" not in alone:
        raise _refuse(path, "'minItems'/'maxItems' need 'items'")
    if "prefixItems" in alone and {"items", "minItems", "maxItems"} & alone:
        raise _refuse(path, "'prefixItems' together with items/minItems/maxItems")
    form = node.get("format")
    if form is not None and form not in FORMATS:
        raise _refuse(path, f"format {form!r} is not supported (only {', '.join(sorted(FORMATS))})")
    if form is not None and {"minLength", "maxLength"} & alone:
        raise _refuse(path, "'format' together with minLength/maxLength")


def _check_enum_types(node: dict[str, Any], path: str) -> None:
    """Every ``enum``/``const`` value has the node's ``type``: the grammar emits them as given."""
    kind = node.get("type")
    values = node.get("enum", [])
    if not isinstance(values, list) or ("enum" in node and not values):
        raise _refuse(path, "'enum' must be a non-empty array")
    if "const" in node:
        values = [*values, node["const"]]
    if not isinstance(kind, str):
        return
    try:
        mismatched = [v for v in values if not TYPE_CHECKER.is_type(v, kind)]
    except UnknownType:
        raise _refuse(path, f"unknown type {kind!r}") from None
    if mismatched:
        raise _refuse(path, f"enum/const value {mismatched[0]!r} is not of type {kind!r}")
