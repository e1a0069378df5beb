"""The grammar that forces a tool call in a template family's own syntax.

Each allowed function's ``parameters`` become one property (``f0``, ``f1``, ...) of one
combined JSON Schema, turned into GBNF by the structured-output module: its rule
``tool-args-fN`` is then exactly that function's arguments, with every check that
``response_format`` gets. Around it, each family writes its own markup, as GBNF literals:
``[TOOL_CALLS]name[ARGS]{...}`` for Mistral, ``<|tool_call_begin|>functions.name:0...`` for
Kimi-K2, and so on. :func:`family_call_grammar` returns None for a family it has no syntax
for (Hermes, and the XML families, whose forced calls are in Hermes syntax on GBNF and in
their own on llguidance: :mod:`.xml_guidance`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from inferflux_core.contracts.generation import ToolSpec
from inferflux_core.structured import schema_grammar
from inferflux_core.tools.families import DS_CALLS_BEGIN, deepseek_token
from inferflux_core.tools.grammar import MAX_PARALLEL_CALLS, hoist_definitions, parameters_schema

ARGS_RULE = "tool-args"
#: How one family writes call ``name`` with arguments rule ``args``, GBNF.
CallWriter = Callable[[str, str], str]


def _lit(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def json_call(key: str) -> CallWriter:
    """Writes a call as ``{"name": ..., key: <arguments>}``."""

    def write(name: str, args: str) -> str:
        head = '{"name": ' + json.dumps(name) + ", " + json.dumps(key) + ": "
        return f"{_lit(head)} {args} {_lit('}')}"

    return write


def _deepseek(name: str, args: str) -> str:
    begin, sep, end = (deepseek_token(t) for t in ("tool call begin", "tool sep", "tool call end"))
    head = begin + "function" + sep + name + "\n```json\n"
    return f"{_lit(head)} {args} {_lit(chr(10) + '```' + end)}"


def _command_r(name: str, args: str) -> str:
    head = '{"tool_call_id": "0", "tool_name": ' + json.dumps(name) + ', "parameters": '
    return f"{_lit(head)} {args} {_lit('}')}"


def _command_r_plus(name: str, args: str) -> str:
    head = '{"tool_name": ' + json.dumps(name) + ', "parameters": '
    return f"{_lit(head)} {args} {_lit('}')}"


#: family -> (how one call is written, what opens the calls, what separates two, what ends
#: them, whether several calls are allowed).
FAMILY_SYNTAX: dict[str, tuple[CallWriter, str, str, str, bool]] = {
    "llama3": (json_call("parameters"), "", "", "", False),
    "mistral": (
        lambda name, args: f"{_lit(name + '[ARGS]')} {args}",
        "[TOOL_CALLS]",
        "[TOOL_CALLS]",
        "",
        True,
    ),
    "granite": (json_call("arguments"), "<|tool_call|>[", ", ", "]", True),
    "firefunction_v2": (json_call("arguments"), " functools[", ", ", "]", True),
    "nemotron_v2": (json_call("arguments"), "<TOOLCALL>[", ", ", "]</TOOLCALL>", True),
    "apriel": (json_call("arguments"), "<tool_calls>[", ", ", "]</tool_calls>", True),
    "deepseek": (_deepseek, DS_CALLS_BEGIN, "\n", deepseek_token("tool calls end"), True),
    "kimi_k2": (
        lambda name, args: (
            f"{_lit('<|tool_call_begin|>functions.' + name + ':0<|tool_call_argument_begin|>')} "
            f"{args} {_lit('<|tool_call_end|>')}"
        ),
        "<|tool_calls_section_begin|>",
        "",
        "<|tool_calls_section_end|>",
        True,
    ),
    "functionary_v3_2": (lambda name, args: f"{_lit(name + chr(10))} {args}", "", ">>>", "", True),
    "functionary_v3_1_llama3_1": (
        lambda name, args: f"{_lit('<function=' + name + '>')} {args} {_lit('</function>')}",
        "",
        "",
        "",
        True,
    ),
    "command_r7b": (_command_r, "<|START_ACTION|>[\n", ",\n", "\n]<|END_ACTION|>", True),
    "command_r_plus": (_command_r_plus, "Action:\n```json\n[\n", ",\n", "\n]\n```", True),
    "gpt_oss": (
        lambda name, args: (
            f"{_lit(f'<|channel|>commentary to=functions.{name} <|constrain|>json<|message|>')} "
            f"{args}"
        ),
        "",
        "",
        "",
        False,
    ),
}


def family_call_grammar(
    family: str, tools: Sequence[ToolSpec], *, parallel: bool, param: str = "tool_choice"
) -> str | None:
    """GBNF forcing one call (or, with ``parallel`` where the family allows several, 1 to
    :data:`MAX_PARALLEL_CALLS`) of one of ``tools`` in ``family``'s syntax; None when the
    family has none here. A 400 (a cap of the grammar passed) names ``param``."""
    syntax = FAMILY_SYNTAX.get(family)
    if syntax is None:
        return None
    write, opening, separator, ending, several = syntax
    definitions: dict[str, Any] = {}
    properties = {
        f"f{i}": hoist_definitions(parameters_schema(tool), f"f{i}-", definitions)
        for i, tool in enumerate(tools)
    }
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }
    if definitions:
        schema["$defs"] = definitions
    rules = schema_grammar(schema, param=param, rule=ARGS_RULE)
    names = [f"{ARGS_RULE}-f{i}" for i in range(len(tools))]
    defined = {line.split(" ::= ", 1)[0] for line in rules.splitlines()}
    if not all(name in defined for name in names):
        return None  # the generator named its rules otherwise: keep the Hermes grammar
    calls = " | ".join(
        f"( {write(tool.name, rule)} )" for tool, rule in zip(tools, names, strict=True)
    )
    call = f"tool-call ::= {calls}"
    repeat = ""
    if parallel and several:
        between = _lit(separator) + " " if separator else ""
        repeat = f" ({between}tool-call){{0,{MAX_PARALLEL_CALLS - 1}}}"
    body = " ".join(
        part
        for part in (
            _lit(opening) if opening else "",
            f"tool-call{repeat}",
            _lit(ending) if ending else "",
        )
        if part
    )
    return f"root ::= {body}\n{call}\n{rules}"
