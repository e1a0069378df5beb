"""Forced calls in the XML families' own syntax, on llguidance.

Qwen3-Coder, Seed-OSS, GLM, MiniMax-M2 and DeepSeek V3.2 write a call's arguments one element
per parameter (``<parameter=k>v</parameter>``, ``<arg_key>k</arg_key><arg_value>v</arg_value>``,
``<parameter name="k">v</parameter>``), not as one JSON object. The grammar here writes that
markup as literals, one element per property in the schema's order (the required ones always,
the others optionally), and each value as a ``%json`` rule holding that property's schema:
llguidance enforces it as it does ``response_format``. Values are written as JSON (a string in
quotes), which the family parser's :func:`~inferflux_core.tools.family_parser.xml_value`
reads back exactly; a bare string would be ambiguous (``123`` reads as a number).

Only a plain object schema can be written this way: :func:`xml_expressible` says whether one
is (its top level only ``properties``, ``required``, ``$defs`` and annotations; no extra
properties; keys every family's parser reads). Otherwise the forced call stays in Hermes
syntax, which the Qwen3-Coder parser also reads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from inferflux_core.tools.families import DSML

#: Top-level keywords a schema may hold and still be written one element per property.
PLAIN_OBJECT_KEYS = frozenset(
    {"type", "properties", "required", "additionalProperties", "$defs", "definitions"}
    | {"description", "title", "$schema", "$id", "$comment", "examples", "strict"}
)
#: Property names every XML family's parser reads back (its key groups exclude ``<>"\n``).
SAFE_KEY = re.compile(r"[A-Za-z0-9_.$-]{1,64}")
#: Writes one ``%json`` rule's body for a property's schema (with the compile options).
JsonRule = Callable[[dict[str, Any]], str]


@dataclass(frozen=True, slots=True)
class XmlCallSyntax:
    """How one XML family writes its calls: ``opening`` and ``ending`` around all of them,
    ``separator`` between two, ``call(name)`` and ``call_end`` around one call's parameters,
    ``parameter(key)`` the markup before and after one value."""

    opening: str
    call: Callable[[str], str]
    parameter: Callable[[str], tuple[str, str]]
    call_end: str
    separator: str = ""
    ending: str = ""


def _qwen(tag: str) -> XmlCallSyntax:
    return XmlCallSyntax(
        "",
        lambda name: f"<{tag}>\n<function={name}>\n",
        lambda key: (f"<parameter={key}>\n", "\n</parameter>\n"),
        f"</function>\n</{tag}>",
        separator="\n",
    )


def _invoke(prefix: str, section: str, string_attribute: str = "") -> XmlCallSyntax:
    return XmlCallSyntax(
        f"<{prefix}{section}>\n",
        lambda name: f'<{prefix}invoke name="{name}">\n',
        lambda key: (
            f'<{prefix}parameter name="{key}"{string_attribute}>',
            f"</{prefix}parameter>\n",
        ),
        f"</{prefix}invoke>\n",
        ending=f"</{prefix}{section}>",
    )


#: family -> its XML call syntax.
XML_SYNTAX: dict[str, XmlCallSyntax] = {
    "qwen3_coder": _qwen("tool_call"),
    "seed_oss": _qwen("seed:tool_call"),
    "glm": XmlCallSyntax(
        "",
        lambda name: f"<tool_call>{name}\n",
        lambda key: (f"<arg_key>{key}</arg_key>\n<arg_value>", "</arg_value>\n"),
        "</tool_call>",
        separator="\n",
    ),
    "minimax_m2": _invoke("", "minimax:tool_call"),
    # DSML marks each value's kind; JSON values are string="false".
    "deepseek_v3_2": _invoke(DSML, "function_calls", ' string="false"'),
}


def xml_expressible(schema: dict[str, Any]) -> bool:
    """Whether ``schema`` (a function's parameters) can be written one element per property."""
    if not set(schema) <= PLAIN_OBJECT_KEYS or schema.get("additionalProperties", False):
        return False
    properties = schema.get("properties", {})
    if not isinstance(properties, dict) or not all(
        isinstance(key, str) and SAFE_KEY.fullmatch(key) for key in properties
    ):
        return False
    required = schema.get("required", [])
    return isinstance(required, list) and set(required) <= set(properties)


def xml_call_rules(
    family: str, index: int, name: str, schema: dict[str, Any], json_rule: JsonRule
) -> tuple[str, list[str]]:
    """Call ``name`` of tool ``index`` in ``family``'s syntax, as a Lark expression, and the
    ``%json`` rules of its values (``schema`` is :func:`xml_expressible`)."""
    syntax = XML_SYNTAX[family]
    definitions: dict[str, Any] = {k: schema[k] for k in ("$defs", "definitions") if k in schema}
    required = set(schema.get("required", []))
    parts = [_lit(syntax.call(name))]
    rules = []
    for j, (key, subschema) in enumerate(schema.get("properties", {}).items()):
        rule = f"value_{index}_{j}"
        rules.append(f"{rule}: %json {json_rule({**_schema(subschema), **definitions})}")
        before, after = syntax.parameter(key)
        element = f"{_lit(before)} {rule} {_lit(after)}"
        parts.append(element if key in required else f"( {element} )?")
    parts.append(_lit(syntax.call_end))
    return " ".join(parts), rules


def xml_body(family: str, call: str, *, several: int) -> str:
    """The Lark body of ``start``: ``call`` once, or 1 to ``several`` times, with the
    family's markup around and between."""
    syntax = XML_SYNTAX[family]
    repeat = ""
    if several > 1:
        between = _lit(syntax.separator) + " " if syntax.separator else ""
        repeat = f" ({between}{call}){{0,{several - 1}}}"
    parts = (_lit(syntax.opening), f"{call}{repeat}", _lit(syntax.ending))
    return " ".join(part for part in parts if part)


def _schema(subschema: object) -> dict[str, Any]:
    """A property's schema as a dict (``true`` is any value; ``false`` cannot be written)."""
    if subschema is True:
        return {}
    if isinstance(subschema, dict):
        return dict(subschema)
    return {"not": {}}  # llguidance refuses it, naming the keyword


def _lit(text: str) -> str:
    """A Lark string literal ("" is none)."""
    return json.dumps(text, ensure_ascii=False) if text else ""
