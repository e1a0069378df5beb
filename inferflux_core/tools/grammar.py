"""The grammar that forces a tool call: ``<tool_call>{"name", "arguments"}</tool_call>``.

Used when ``tool_choice`` is ``required`` or names a function. The call's JSON is described
as one JSON Schema (an ``anyOf`` with one object per allowed function: its name as a
``const``, its ``parameters`` as ``arguments``) and turned into GBNF by the structured-output
module, so every check that ``response_format`` gets applies to tool parameters too. Each
function's ``$defs`` move to the combined schema's root under a per-function prefix, so their
local ``$ref``s still resolve and two functions' definitions never collide.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from inferflux_core.contracts.generation import ToolSpec
from inferflux_core.structured import schema_grammar
from inferflux_core.tools.parser import CLOSE, OPEN

CALL_RULE = "tool-call"
#: Most calls one forced output may hold: a small model tends to repeat a call until
#: ``max_tokens`` runs out, cutting the last one off; the bound ends the output complete.
MAX_PARALLEL_CALLS = 8
DEFINITION_KEYWORDS = ("$defs", "definitions")
#: Keywords whose values are data, not schemas: a ``$ref`` inside them is not a reference.
VALUE_KEYWORDS = frozenset({"$ref", "const", "enum", "default", "examples"})


def forced_call_grammar(
    tools: Sequence[ToolSpec], *, parallel: bool, param: str = "tool_choice"
) -> str:
    """GBNF for one call (or, with ``parallel``, 1 to :data:`MAX_PARALLEL_CALLS`) of one of
    ``tools``; a 400 (a cap of the combined grammar passed) names ``param``."""
    definitions: dict[str, Any] = {}
    calls = []
    for i, tool in enumerate(tools):
        arguments = hoist_definitions(parameters_schema(tool), f"f{i}-", definitions)
        calls.append(
            {
                "type": "object",
                "properties": {"name": {"const": tool.name}, "arguments": arguments},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
        )
    schema: dict[str, Any] = calls[0] if len(calls) == 1 else {"anyOf": calls}
    if definitions:
        schema = {**schema, "$defs": definitions}
    rules = schema_grammar(schema, param=param, rule=CALL_RULE, first=("name", "arguments"))
    block = f"{_literal(OPEN + chr(10))} {CALL_RULE} {_literal(chr(10) + CLOSE)}"
    repeat = f' ("\\n" {block}){{0,{MAX_PARALLEL_CALLS - 1}}}' if parallel else ""
    return f"root ::= {block}{repeat}\n{rules}"


def parameters_schema(tool: ToolSpec) -> dict[str, Any]:
    """The tool's ``parameters``, or an object without properties when it takes none."""
    if tool.parameters is None:
        return {"type": "object", "properties": {}}
    return dict(tool.parameters)


def tool_template_dict(tool: ToolSpec) -> dict[str, Any]:
    """The tool as chat templates and the fallback prompt show it to the model."""
    function: dict[str, Any] = {"name": tool.name}
    if tool.description:
        function["description"] = tool.description
    function["parameters"] = parameters_schema(tool)
    return {"type": "function", "function": function}


def _literal(text: str) -> str:
    """A GBNF string literal."""
    return json.dumps(text)


def hoist_definitions(schema: dict[str, Any], prefix: str, into: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``schema`` without its definitions, which go to ``into`` renamed with
    ``prefix``; its local ``$ref``s are rewritten to match."""
    copy: dict[str, Any] = json.loads(json.dumps(schema))
    renames = {}
    moved: dict[str, Any] = {}
    for keyword in DEFINITION_KEYWORDS:
        definitions = copy.pop(keyword, None)
        if not isinstance(definitions, dict):
            continue
        tag = f"{prefix}{keyword.strip('$')}-"
        renames[f"#/{keyword}/"] = f"#/$defs/{tag}"
        moved.update((f"{tag}{name}", definition) for name, definition in definitions.items())
    if renames:
        _rewrite_refs([copy, *moved.values()], renames)
    into.update(moved)
    return copy


def _rewrite_refs(roots: list[Any], renames: dict[str, str]) -> None:
    """Rewrite ``$ref`` strings starting with a key of ``renames``, in place, without
    recursion (a schema's nesting is the client's choice)."""
    stack = list(roots)
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                for old, new in renames.items():
                    if ref.startswith(old):
                        node["$ref"] = new + ref[len(old) :]
                        break
            stack.extend(v for k, v in node.items() if k not in VALUE_KEYWORDS)
