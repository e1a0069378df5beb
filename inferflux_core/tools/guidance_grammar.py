"""The llguidance grammar that forces a tool call, in a template family's own syntax.

The llguidance counterpart of :mod:`.family_grammar` and :mod:`.grammar`, used when the
model's backend runs llguidance (``structured_output: auto`` with llguidance installed, or
``llguidance``). One Lark grammar writes the family's markup as string literals around each
allowed function's arguments, and the arguments are a ``%json`` rule holding the function's
``parameters``: llguidance enforces them as it does ``response_format`` (``pattern``,
``oneOf``, ``allOf``, ``format`` s, local ``$ref``), under the same caps and compile options
(:mod:`inferflux_core.structured.guidance`). Each ``%json`` schema is self-contained, so its
``$defs`` stay where they are. The XML families (Qwen3-Coder, Seed-OSS, GLM, MiniMax-M2,
DeepSeek V3.2) write one element per parameter (:mod:`.xml_guidance`) where the parameters are
a plain object schema. A family with neither is written in Hermes syntax, as the GBNF path
does. The markup is matched as text: the output parses
back through the same family parser. Grammars are cached by their Lark text, with the
compiled schemas.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from inferflux_core.contracts.generation import ToolSpec
from inferflux_core.structured.cache import digest
from inferflux_core.structured.guidance import (
    COMPILE_OPTIONS,
    GUIDANCE_GRAMMARS,
    parser_limits,
    refused,
    schema_guidance,
    strict_objects,
)
from inferflux_core.tools.families import HERMES
from inferflux_core.tools.family_grammar import FAMILY_SYNTAX, json_call
from inferflux_core.tools.grammar import MAX_PARALLEL_CALLS, parameters_schema
from inferflux_core.tools.parser import CLOSE, OPEN
from inferflux_core.tools.xml_guidance import XML_SYNTAX, xml_body, xml_call_rules, xml_expressible

#: Hermes syntax (also read by the Qwen3-Coder family's parser), as a family syntax.
HERMES_SYNTAX = (
    json_call("arguments"),
    OPEN + "\n",
    "\n" + CLOSE + "\n" + OPEN + "\n",
    "\n" + CLOSE,
    True,
)


def guidance_family(family: str, tools: Sequence[ToolSpec]) -> str:
    """The family a forced call of one of ``tools`` is written (and so parsed) in under
    llguidance: its own where it has a syntax here, else Hermes (which the Qwen3-Coder
    parser reads too)."""
    if family in FAMILY_SYNTAX:
        return family
    if family in XML_SYNTAX and all(xml_expressible(parameters_schema(t)) for t in tools):
        return family
    return family if family == "qwen3_coder" else HERMES


def forced_call_guidance(
    family: str, tools: Sequence[ToolSpec], params: Sequence[str], *, parallel: bool
) -> str:
    """The llguidance grammar forcing one call (or, with ``parallel`` where the family allows
    several, 1 to :data:`MAX_PARALLEL_CALLS`) of one of ``tools`` in ``family``'s syntax
    (``family`` is what :func:`guidance_family` chose). ``params[i]`` is where ``tools[i]``'s
    parameters are in the request: a schema over a cap or refused by llguidance is a 400
    naming it."""
    rules = []
    calls = []
    xml = family in XML_SYNTAX and all(xml_expressible(parameters_schema(t)) for t in tools)
    for i, (tool, param) in enumerate(zip(tools, params, strict=True)):
        schema = parameters_schema(tool)
        schema_guidance(schema, param=param)  # the caps, and llguidance's verdict, cached
        if xml:
            call, values = xml_call_rules(family, i, tool.name, schema, _json_rule)
            calls.append(f"( {call} )")
            rules.extend(values)
        else:
            write = FAMILY_SYNTAX.get(family, HERMES_SYNTAX)[0]
            rules.append(f"args_{i}: %json {_json_rule(schema)}")
            calls.append(f"( {write(tool.name, f'args_{i}')} )")
    if xml:
        body = xml_body(family, "call", several=MAX_PARALLEL_CALLS if parallel else 1)
    else:
        _, opening, separator, ending, several = FAMILY_SYNTAX.get(family, HERMES_SYNTAX)
        repeat = ""
        if parallel and several:
            between = _lit(separator) + " " if separator else ""
            repeat = f" ({between}call){{0,{MAX_PARALLEL_CALLS - 1}}}"
        body = " ".join(part for part in (_lit(opening), f"call{repeat}", _lit(ending)) if part)
    lark = "\n".join((f"start: {body}", "call: " + " | ".join(calls), *rules))
    cache_key = digest("llguidance-lark", lark)
    grammar = GUIDANCE_GRAMMARS.get(cache_key)
    if grammar is None:
        grammar = _compile(lark, params)
        GUIDANCE_GRAMMARS.put(cache_key, grammar, len(grammar))
    return grammar


def _compile(lark: str, params: Sequence[str]) -> str:
    from llguidance import LLMatcher  # present: schema_guidance compiled with it

    grammar = str(LLMatcher.grammar_from_lark(lark))
    failed, messages = LLMatcher.validate_grammar_with_warnings(
        grammar, None, limits=parser_limits()
    )
    if failed or messages:
        param = params[0] if len(params) == 1 else "tool_choice"
        raise refused(param, "; ".join(messages) or "the grammar was refused")
    return grammar


def _json_rule(schema: dict[str, Any]) -> str:
    """``schema`` as a ``%json`` body: strict objects, and our compile options (a client's
    ``x-guidance`` replaced, so ``lenient`` mode is never on)."""
    strict = strict_objects(json.loads(json.dumps(schema)))
    strict["x-guidance"] = dict(COMPILE_OPTIONS)
    return json.dumps(strict, ensure_ascii=False)


def _lit(text: str) -> str:
    """A Lark string literal ("" is none)."""
    return json.dumps(text, ensure_ascii=False) if text else ""
