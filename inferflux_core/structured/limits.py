"""Caps on what a client schema may ask of the grammar, checked before anything is built.

The converter writes a repetition bound ``n`` as ``n`` nested optional groups, and
llama.cpp's grammar parser recurses once per group: ``maxLength: 30000`` overflowed its C
stack. A repetition of ``10**12`` runs the converter out of memory first. So every count,
bound and size a schema carries is capped here, by one iterative walk that never recurses and
never converts a number to float before checking it; a value past a cap is a 400 naming the
field (its JSON path inside the schema) and the cap. The grammar text the converter returns is
capped again, in bytes and in nesting, before it reaches llama.cpp.

Pure, synchronous functions: callers may run them on a worker thread.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any, TypeGuard

from inferflux_core.errors import InvalidRequestError

#: Largest ``minLength``/``maxLength``/``minItems``/``maxItems`` (llama.cpp's parser refuses
#: the nested groups past about 1,000 anyway; ``minProperties``/``maxProperties`` are refused
#: as unsupported keywords).
MAX_REPEAT = 1000
#: Largest magnitude of ``minimum``/``maximum``/``exclusiveMinimum``/``exclusiveMaximum``
#: (15 digits, as the numeric rules write them).
MAX_BOUND = 10**15 - 1
BOUND_KEYWORDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
REPEAT_KEYWORDS = ("minLength", "maxLength", "minItems", "maxItems")
#: Most ``properties`` one object may list, and all objects of a schema together.
MAX_OBJECT_PROPERTIES = 256
MAX_TOTAL_PROPERTIES = 2048
#: Most values in one ``enum``; most alternatives in one ``anyOf``/``prefixItems``.
MAX_ENUM_VALUES = 1024
MAX_ALTERNATIVES = 256
#: Most subschemas in one schema (``$defs`` included), and most ``$defs``/``definitions``.
MAX_SUBSCHEMAS = 4096
MAX_DEFINITIONS = 512
#: Deepest nesting of objects and arrays in the schema's JSON (values of ``const``/``enum``
#: included): 32 schema levels (``schema_rules.MAX_DEPTH``) take about 64.
MAX_JSON_DEPTH = 72
#: Longest ``pattern`` (llguidance compiles them into its lexer; its fuel bounds the rest).
MAX_PATTERN_CHARS = 2000
#: Longest property name, and ``$defs`` name (they become parts of rule names).
MAX_NAME_CHARS = 256
#: Largest grammar text handed to llama.cpp, and deepest parenthesis nesting inside it.
MAX_GRAMMAR_BYTES = 1024 * 1024
MAX_GRAMMAR_NESTING = MAX_REPEAT + 64
#: Bytes a repetition or a literal adds to the grammar per unit, at most, beyond its rule's
#: name (the estimate refuses a schema whose grammar would pass ``MAX_GRAMMAR_BYTES``).
REPEAT_OVERHEAD = 16
NAME_MENTIONS = 6

#: What ``grammar_nesting`` skips (string literals and character classes) and counts.
SKIPPED = re.compile(r'"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]|#[^\n]*')
PARENS = re.compile(r"[()]")
CHILD_MAPS = ("properties", "$defs", "definitions")
CHILD_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
CHILD_SCHEMAS = ("items", "additionalProperties")


def refuse(param: str, path: str, problem: str) -> InvalidRequestError:
    """The 400 for a schema value past a cap, naming where it is."""
    where = f"{param}{path.replace('/', '.')}" if path else param
    return InvalidRequestError(f"{where}: {problem}", param=param, code="too_large")


def nesting_depth(value: Any, limit: int | None = None) -> int:
    """How deeply objects and arrays nest in ``value``, measured without recursion; with
    ``limit``, the walk stops at the first level past it (and returns that level)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, depth)
        if limit is not None and depth > limit:
            return depth
        stack.extend((child, depth + 1) for child in children)
    return deepest


def check_json_depth(value: Any, param: str, limit: int = MAX_JSON_DEPTH) -> None:
    """400 if objects and arrays nest deeper than ``limit`` in ``value`` (no recursion)."""
    if nesting_depth(value, limit) > limit:
        raise InvalidRequestError(
            f"{param}: nested deeper than {limit} levels (the cap is {limit})",
            param=param,
            code="too_large",
        )


def check_schema_limits(schema: Any, param: str) -> None:
    """400 naming the field and the cap if ``schema`` passes any cap of this module.

    Only values of the right shape are checked; a wrong shape is left for the schema checks
    that follow, which name it.
    """
    check_json_depth(schema, param)
    totals = {"subschemas": 0, "properties": 0, "grammar": 0}
    for path, node in subschemas(schema):
        totals["subschemas"] += 1
        if totals["subschemas"] > MAX_SUBSCHEMAS:
            raise refuse(param, path, f"more than {MAX_SUBSCHEMAS} subschemas (the cap)")
        _check_node_limits(node, path, param, totals)
        if totals["properties"] > MAX_TOTAL_PROPERTIES:
            raise refuse(
                param, path, f"more than {MAX_TOTAL_PROPERTIES} properties in all (the cap)"
            )
        if totals["grammar"] > MAX_GRAMMAR_BYTES:
            raise refuse(
                param,
                path,
                f"the schema's grammar would pass {MAX_GRAMMAR_BYTES} bytes (the cap); "
                "use fewer or shorter repetitions, properties or enum values",
            )


def subschemas(schema: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every subschema that is an object, with its JSON path, depth first without recursion."""
    stack: list[tuple[str, Any]] = [("", schema)]
    while stack:
        path, node = stack.pop()
        if not isinstance(node, dict):
            continue
        yield path, node
        for keyword in CHILD_MAPS:
            children = node.get(keyword)
            if isinstance(children, dict):
                stack.extend((f"{path}/{keyword}/{k}", v) for k, v in children.items())
        for keyword in CHILD_LISTS:
            children = node.get(keyword)
            if isinstance(children, list):
                stack.extend((f"{path}/{keyword}/{i}", v) for i, v in enumerate(children))
        for keyword in CHILD_SCHEMAS:
            stack.append((f"{path}/{keyword}", node.get(keyword)))


def _check_node_limits(node: dict[str, Any], path: str, param: str, totals: dict[str, int]) -> None:
    """Caps on one subschema's own keywords; adds its share to ``totals``."""
    name_cost = len(path) + REPEAT_OVERHEAD
    for keyword in REPEAT_KEYWORDS:
        value = node.get(keyword)
        if _is_number(value) and not _within(value, MAX_REPEAT):
            raise refuse(
                param, f"{path}/{keyword}", f"{_shown(value)} is over the cap of {MAX_REPEAT}"
            )
    # A string repeats the short ``char`` rule; an array repeats its item rule, whose name
    # grows with the path.
    totals["grammar"] += _repeats(node, ("minLength", "maxLength")) * REPEAT_OVERHEAD
    totals["grammar"] += _repeats(node, ("minItems", "maxItems")) * name_cost
    for keyword in BOUND_KEYWORDS:
        value = node.get(keyword)
        if _is_number(value) and not _within(value, MAX_BOUND):
            raise refuse(
                param,
                f"{path}/{keyword}",
                f"{_shown(value)} is outside the cap of ±{MAX_BOUND} (15 digits)",
            )
    for keyword, cap in (("properties", MAX_OBJECT_PROPERTIES), ("enum", MAX_ENUM_VALUES)):
        _check_count(node.get(keyword), cap, param, f"{path}/{keyword}")
    for keyword in CHILD_LISTS:
        _check_count(node.get(keyword), MAX_ALTERNATIVES, param, f"{path}/{keyword}")
    for keyword in ("$defs", "definitions"):
        _check_count(node.get(keyword), MAX_DEFINITIONS, param, f"{path}/{keyword}")
    for keyword in ("properties", "$defs", "definitions"):
        children = node.get(keyword)
        if isinstance(children, dict):
            for name in children:
                if len(name) > MAX_NAME_CHARS:
                    raise refuse(
                        param,
                        f"{path}/{keyword}",
                        f"a name of {len(name)} characters is over the cap of {MAX_NAME_CHARS}",
                    )
                # A property's rule name is written in its own rule, its key-value rule and
                # (when optional) the chain of rules that follow it: about six times.
                totals["grammar"] += NAME_MENTIONS * (len(name) + name_cost)
    pattern = node.get("pattern")
    if isinstance(pattern, str) and len(pattern) > MAX_PATTERN_CHARS:
        raise refuse(
            param,
            f"{path}/pattern",
            f"a pattern of {len(pattern)} characters is over the cap of {MAX_PATTERN_CHARS}",
        )
    properties = node.get("properties")
    if isinstance(properties, dict):
        totals["properties"] += len(properties)
    totals["grammar"] += _literal_bytes(node)


def _repeats(node: dict[str, Any], keywords: tuple[str, str]) -> int:
    """The larger of the node's two repetition bounds (0 without them)."""
    return max((abs(int(node[k])) for k in keywords if _is_number(node.get(k))), default=0)


def _check_count(children: Any, cap: int, param: str, path: str) -> None:
    if isinstance(children, dict | list) and len(children) > cap:
        raise refuse(param, path, f"{len(children)} entries are over the cap of {cap}")


def _literal_bytes(node: dict[str, Any]) -> int:
    """About how many grammar bytes the node's ``const`` and ``enum`` values take."""
    values = list(node["enum"]) if isinstance(node.get("enum"), list) else []
    if "const" in node:
        values.append(node["const"])
    return sum(_json_size(v) + REPEAT_OVERHEAD for v in values)


def _json_size(value: Any) -> int:
    """An upper bound, near enough, on the escaped JSON size of ``value`` (no recursion)."""
    size = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
            size += sum(2 * len(k) + 8 for k in item) + 2
        elif isinstance(item, list):
            stack.extend(item)
            size += 2 + len(item)
        elif isinstance(item, str):
            size += 2 * len(item) + 4
        else:
            size += 24 if not isinstance(item, int) or item.bit_length() < 64 else 2 * 4300
    return size


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _within(value: int | float, cap: int) -> bool:
    """Whether ``|value| <= cap``; integers are compared exactly, never converted to float."""
    if isinstance(value, int):
        return abs(value) <= cap
    return math.isfinite(value) and abs(value) <= cap


def _shown(value: int | float) -> str:
    """A number as the error message shows it: huge integers by their size."""
    if isinstance(value, int) and value.bit_length() > 64:
        return f"an integer of {len(str(value))} digits"
    return repr(value)


def check_grammar_size(grammar: str, param: str) -> None:
    """400 if ``grammar`` passes :data:`MAX_GRAMMAR_BYTES` or :data:`MAX_GRAMMAR_NESTING`."""
    size = len(grammar.encode("utf-8", errors="surrogatepass"))
    if size > MAX_GRAMMAR_BYTES:
        raise InvalidRequestError(
            f"{param}: the grammar for this schema is {size} bytes, over the cap of "
            f"{MAX_GRAMMAR_BYTES} bytes; use fewer or shorter repetitions, properties or enum "
            "values",
            param=param,
            code="too_large",
        )
    depth = grammar_nesting(grammar)
    if depth > MAX_GRAMMAR_NESTING:
        raise InvalidRequestError(
            f"{param}: the grammar for this schema nests {depth} groups deep, over the cap of "
            f"{MAX_GRAMMAR_NESTING}",
            param=param,
            code="too_large",
        )


def grammar_nesting(grammar: str) -> int:
    """The deepest parenthesis nesting in GBNF text, string literals and classes skipped."""
    deepest = 0
    for line in SKIPPED.sub("", grammar).split("\n"):
        depth = 0
        for paren in PARENS.findall(line):
            depth += 1 if paren == "(" else -1
            deepest = max(deepest, depth)
    return deepest
