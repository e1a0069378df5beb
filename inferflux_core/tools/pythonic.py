"""Tool calls written as Python calls (LFM2's ``[f(a=1, b="x")]``, Llama 3's built-in
``brave_search.call(query="x")``), read with :mod:`ast` and literals only: nothing is ever
evaluated, and a call whose arguments are not literals is not a call."""

from __future__ import annotations

import ast
import json
import math
from typing import Any

from inferflux_core.tools.parser import MAX_BLOCK_DEPTH, nesting_depth

#: JSON's literals, which LFM2 writes as well as Python's.
NAMED = {"true": True, "false": False, "null": None, "True": True, "False": False, "None": None}


def python_calls(source: str) -> list[tuple[str, str]] | None:
    """``[name(k=v, ...), ...]`` as (name, JSON arguments) pairs, or None."""
    expression = _expression(source)
    if not isinstance(expression, ast.List) or not expression.elts:
        return None
    calls = [_call(node, dotted=False) for node in expression.elts]
    return None if any(call is None for call in calls) else [c for c in calls if c is not None]


def builtin_call(source: str) -> list[tuple[str, str]] | None:
    """Llama 3's ``tool.call(k=v, ...)`` as one (tool, JSON arguments) pair, or None."""
    call = _call(_expression(source), dotted=True)
    return None if call is None else [call]


def _expression(source: str) -> ast.expr | None:
    if nesting_depth(source) > MAX_BLOCK_DEPTH:
        return None
    try:
        return ast.parse(source.strip(), mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def _call(node: ast.expr | None, *, dotted: bool) -> tuple[str, str] | None:
    if not isinstance(node, ast.Call) or node.args:
        return None
    function = node.func
    if dotted:
        if not (
            isinstance(function, ast.Attribute)
            and function.attr == "call"
            and isinstance(function.value, ast.Name)
        ):
            return None
        name = function.value.id
    elif isinstance(function, ast.Name):
        name = function.id
    else:
        return None
    arguments: dict[str, Any] = {}
    try:
        for keyword in node.keywords:
            if keyword.arg is None:
                return None
            arguments[keyword.arg] = _literal(keyword.value)
        return name, json.dumps(arguments, ensure_ascii=False)
    except ValueError:  # not a literal, or an integer too long to write
        return None


def _literal(node: ast.expr) -> Any:
    """A literal's value: constants, lists, tuples, dicts with string keys, JSON's names."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, int, bool)):
        return node.value
    if isinstance(node, ast.Constant) and isinstance(node.value, float):
        if not math.isfinite(node.value):
            raise ValueError("not a JSON number")
        return node.value
    if isinstance(node, ast.Constant) and node.value is None:
        return None
    if isinstance(node, ast.Name) and node.id in NAMED:
        return NAMED[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        operand = node.operand  # one minus on a number: no recursion on ``- - - 1``
        if isinstance(operand, ast.Constant) and type(operand.value) in (int, float):
            return -_literal(operand)
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(item) for item in node.elts]
    if isinstance(node, ast.Dict):
        result: dict[str, Any] = {}
        for key, value in zip(node.keys, node.values, strict=True):
            if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
                raise ValueError("a dict key that is not a string")
            result[key.value] = _literal(value)
        return result
    raise ValueError("not a literal")
