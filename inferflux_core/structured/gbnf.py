"""JSON Schema → GBNF, with llama-cpp-python's converter and the gaps it leaves filled.

The converter (``llama_cpp.llama_grammar.SchemaConverter``) is extended in two places: integer
and number bounds (it ignores them) and JSON string characters (it lets raw control
characters through, which no JSON parser accepts). Every cap of :mod:`.limits` is checked
before the converter runs, and the grammar's size after. Grammars are cached per schema, keyed
by a digest of the schema's canonical JSON, the cache bounded in entries and bytes.
"""

from __future__ import annotations

import json
from typing import Any

from inferflux_core.errors import InvalidRequestError
from inferflux_core.structured.cache import BoundedCache, digest
from inferflux_core.structured.limits import check_grammar_size, check_json_depth
from inferflux_core.structured.numeric import (
    BoundsError,
    integer_bounds,
    integer_rule,
    number_bounds,
    number_rule,
)
from inferflux_core.structured.schema_rules import PARAM, check_schema

CACHED_SCHEMAS = 256
#: Most grammar text the schema cache holds, all entries together.
CACHED_BYTES = 16 * 1024 * 1024
BOUND_KEYWORDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
#: A JSON string character: anything but a quote, a backslash or a control character, or an
#: escape.
JSON_CHAR = r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})'
#: ``response_format: {"type": "json_object"}``: any JSON object.
ANY_OBJECT: dict[str, Any] = {"type": "object"}


def canonical_json(schema: Any) -> str:
    """The cache key of a schema: sorted keys, no spaces."""
    return json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def schema_grammar(
    schema: Any, *, param: str = PARAM, rule: str = "root", first: tuple[str, ...] = ()
) -> str:
    """GBNF whose every sentence is JSON valid against ``schema``.

    The sentence is rule ``rule``: the default ``root`` is the start rule; under another name
    the caller adds its own ``root`` around it. Properties named in ``first`` come before the
    others, in that order, wherever they occur. 400 naming the problem (``param`` says where
    the schema is in the request) if the schema is invalid, uses what the grammar cannot
    enforce, or passes a cap of :mod:`.limits`.
    """
    check_json_depth(schema, param)
    key = canonical_json(schema)
    cache_key = digest(key, rule, *first)
    grammar = SCHEMA_GRAMMARS.get(cache_key)
    if grammar is None:
        grammar = _build_grammar(json.loads(key), param, rule, first)
        SCHEMA_GRAMMARS.put(cache_key, grammar, len(grammar))
    return grammar


#: Grammars by schema (and start rule and property order), shared by every request.
SCHEMA_GRAMMARS: BoundedCache[str] = BoundedCache(CACHED_SCHEMAS, CACHED_BYTES)


def _build_grammar(schema: Any, param: str, rule: str, first: tuple[str, ...]) -> str:
    check_schema(schema, param)
    try:
        from llama_cpp.llama_grammar import SchemaConverter
    except ImportError:
        raise InvalidRequestError(
            f"{param}: structured output needs llama-cpp-python's JSON Schema converter, "
            "which is not installed",
            param=param,
            code="unsupported",
        ) from None
    converter = _bounded_converter(SchemaConverter, {name: i for i, name in enumerate(first)})
    try:
        converter.visit(converter.resolve_refs(schema, ""), "" if rule == "root" else rule)
        grammar = str(converter.format_grammar())
    except BoundsError as exc:
        raise InvalidRequestError(f"{param}: {exc}", param=param, code="unsupported") from None
    except (AssertionError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise InvalidRequestError(
            f"{param}: the schema cannot be turned into a grammar ({type(exc).__name__}: "
            f"{str(exc)[:200]})",
            param=param,
            code="unsupported",
        ) from None
    check_grammar_size(grammar, param)
    return grammar


def _bounded_converter(base: type, prop_order: dict[str, int]) -> Any:
    """An instance of the converter, extended with bounds and strict string characters."""

    class BoundedConverter(base):  # type: ignore[misc]
        def visit(self, schema: dict[str, Any], name: str) -> str:
            kind = schema.get("type")
            if kind in ("integer", "number") and any(k in schema for k in BOUND_KEYWORDS):
                if kind == "integer":
                    body = integer_rule(*integer_bounds(schema))
                else:
                    body = number_rule(*number_bounds(schema))
                return str(self._add_rule(name or "root", f"{body} space"))
            return str(super().visit(schema, name))

        def _add_primitive(self, name: str, rule: Any) -> str:
            if name == "char":
                return str(self._add_rule(name, JSON_CHAR))
            return str(super()._add_primitive(name, rule))

    return BoundedConverter(
        prop_order=prop_order, allow_fetch=False, dotall=False, raw_pattern=False
    )
