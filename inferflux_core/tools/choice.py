"""What a request's ``tools``, ``tool_choice`` and ``parallel_tool_calls`` ask for, checked.

A :class:`ToolPlan` says which tools the model is shown, whether its output is searched for
calls, and the grammar that forces a call (``tool_choice: required`` or a named function).
Every problem is a 400 naming the field, found before anything is generated: a duplicate or
ill-formed function name, an unknown named function, parameters that are not a valid JSON
Schema (Draft 2020-12), and, where a call is forced, parameters its engine cannot enforce:
llguidance when the backend runs it (which refuses ``not`` or ``uniqueItems``, and bounds
its regexes), else GBNF (which refuses ``pattern``, so no client regex is ever run there).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from inferflux_core.contracts.generation import InferenceRequest, ToolSpec
from inferflux_core.errors import InvalidRequestError
from inferflux_core.structured import GrammarChecker, check_backend_grammar
from inferflux_core.structured.guidance import GuidanceChecker, check_backend_guidance
from inferflux_core.structured.schema_rules import check_schema, check_valid_schema
from inferflux_core.tools.families import HERMES, detect_family
from inferflux_core.tools.family_grammar import family_call_grammar
from inferflux_core.tools.grammar import forced_call_grammar
from inferflux_core.tools.guidance_grammar import forced_call_guidance, guidance_family

Mode = Literal["none", "auto", "forced"]


@dataclass(frozen=True, slots=True)
class ToolPlan:
    """How one chat request uses tools."""

    #: ``none``: no tools shown, output not parsed; ``auto``: tools shown, calls parsed out of
    #: free output; ``forced``: the grammar makes the output one call (with ``required`` and
    #: parallel calls allowed, one or more).
    mode: Mode = "none"
    offered: tuple[ToolSpec, ...] = ()
    grammar: str | None = None
    max_calls: int | None = None
    #: The syntax calls are parsed in (:mod:`inferflux_core.tools.families`): the chat
    #: template's family when it renders tools itself and the call is not forced, else
    #: ``hermes`` (what the fallback prompt teaches and the forcing grammar writes).
    family: str = "hermes"
    #: The llguidance grammar that forces the call, instead of ``grammar``, when the backend
    #: runs llguidance (:mod:`~inferflux_core.tools.guidance_grammar`).
    guidance: str | None = None

    @property
    def parses_calls(self) -> bool:
        """Whether the output is searched for tool calls."""
        return self.mode != "none"


NO_TOOLS = ToolPlan()


def template_family(source: str | None) -> str:
    """The tool-call family of a chat template that renders tools itself (``source``); None,
    a template that does not, gets the fallback prompt and so the Hermes family."""
    return HERMES if source is None else detect_family(source)


def plan_tools(
    request: InferenceRequest,
    backend: GrammarChecker | None,
    family: str = HERMES,
    *,
    guidance: GuidanceChecker | None = None,
) -> ToolPlan:
    """The checked plan for ``request``'s tools and tool choice; 400 naming the problem.

    ``backend`` checks a forcing grammar; None when the backend applies no grammar (a
    request-level backend with native tools), so no call can be forced by one. ``family``
    is the chat template's tool-call family (:func:`template_family`): calls are parsed in
    its syntax, and a forced call is written in it where
    :mod:`~inferflux_core.tools.family_grammar` has its syntax (else in Hermes syntax).
    ``guidance``, the backend when it runs llguidance, forces the call with an llguidance
    grammar in the same syntax instead of GBNF (so ``pattern`` and ``oneOf`` hold).
    """
    tools = list(request.tools)
    choice = request.tool_choice
    if not tools:
        return NO_TOOLS
    _check_names(tools)
    forced = _forced_names(choice.mode, choice.name, tools)
    for index, tool in enumerate(tools):
        enforced = forced is not None and tool.name in forced and guidance is None
        _check_parameters(tool, index, enforced=enforced)
    if choice.mode == "none":
        return NO_TOOLS
    max_calls = None if request.parallel_tool_calls else 1
    if forced is None:
        return ToolPlan("auto", tuple(tools), None, max_calls, family)
    options = request.options
    if options.ignore_eos or options.min_tokens:
        raise InvalidRequestError(
            "tool_choice: ignore_eos and min_tokens cannot be combined with a forced tool call "
            "(the output ends when the call is complete)",
            param="ignore_eos" if options.ignore_eos else "min_tokens",
        )
    if choice.mode == "function":
        # A named function is called once, as OpenAI and vLLM do: clients that force one
        # (instructor, LangChain's bind_tools) expect a single call, and a small model
        # otherwise repeats the call until max_tokens cuts it off.
        max_calls = 1
    chosen = [i for i, tool in enumerate(tools) if tool.name in forced]
    # The grammar is built from the chosen functions' parameters: one function's problem is
    # its parameters', a combination's is the tool_choice that combined them.
    param = f"tools.{chosen[0]}.function.parameters" if len(chosen) == 1 else "tool_choice"
    chosen_tools = [tools[i] for i in chosen]
    if guidance is not None:
        family = guidance_family(family, chosen_tools)
        params = [f"tools.{i}.function.parameters" for i in chosen]
        rules = forced_call_guidance(family, chosen_tools, params, parallel=max_calls is None)
        check_backend_guidance(guidance, rules, param)
        return ToolPlan("forced", tuple(tools), None, max_calls, family, rules)
    grammar = family_call_grammar(family, chosen_tools, parallel=max_calls is None, param=param)
    if grammar is None:
        # Hermes syntax, which the Qwen3-Coder family's parser reads too.
        family = family if family == "qwen3_coder" else HERMES
        grammar = forced_call_grammar(chosen_tools, parallel=max_calls is None, param=param)
    if backend is not None:
        check_backend_grammar(backend, grammar, param)
    return ToolPlan("forced", tuple(tools), grammar, max_calls, family)


def _check_names(tools: Sequence[ToolSpec]) -> None:
    seen: set[str] = set()
    for index, tool in enumerate(tools):
        if tool.name in seen:
            raise InvalidRequestError(
                f"tools.{index}.function.name: the function name {tool.name!r} is used twice",
                param=f"tools.{index}.function.name",
            )
        seen.add(tool.name)


def _forced_names(mode: str, name: str | None, tools: Sequence[ToolSpec]) -> frozenset[str] | None:
    """The functions one of which must be called; None when no call is forced."""
    if mode in ("none", "auto"):
        return None
    if mode == "required":
        return frozenset(tool.name for tool in tools)
    if name not in {tool.name for tool in tools}:
        raise InvalidRequestError(
            f"tool_choice.function.name: no function named {name!r} is in tools",
            param="tool_choice.function.name",
        )
    return frozenset({name}) if name is not None else None


def _check_parameters(tool: ToolSpec, index: int, *, enforced: bool) -> None:
    """400 unless the tool's parameters are a valid object schema (and, when a grammar will
    enforce them, one the grammar supports)."""
    param = f"tools.{index}.function.parameters"
    schema = tool.parameters
    if schema is None:
        return
    if schema.get("type", "object") != "object":
        raise InvalidRequestError(
            f"{param}: must be a JSON Schema of type 'object', got type {schema['type']!r}",
            param=param,
        )
    if enforced:
        check_schema(dict(schema), param)
    else:
        check_valid_schema(dict(schema), param)
