"""What a request's ``tools``, ``tool_choice`` and ``parallel_tool_calls`` ask for, checked.

A :class:`ToolPlan` says which tools the model is shown, whether its output is searched for
calls, and the grammar that forces a call (``tool_choice: required`` or a named function).
Every problem is a 400 naming the field, found before anything is generated: a duplicate or
ill-formed function name, an unknown named function, parameters that are not a valid JSON
Schema (Draft 2020-12), and, where a call is forced, parameters the grammar cannot enforce
(``pattern`` among them, so no client regex is ever run).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from inferflux_core.contracts import StepBackend
from inferflux_core.errors import InvalidRequestError
from inferflux_core.protocol.chat import ChatCompletionRequest
from inferflux_core.protocol.tools import NamedToolChoice, ToolDefinition
from inferflux_core.structured import check_backend_grammar
from inferflux_core.structured.schema_rules import check_schema, check_valid_schema
from inferflux_core.tools.grammar import forced_call_grammar

CHOICES = ("none", "auto", "required")

Mode = Literal["none", "auto", "forced"]


@dataclass(frozen=True, slots=True)
class ToolPlan:
    """How one chat request uses tools."""

    #: ``none``: no tools shown, output not parsed; ``auto``: tools shown, calls parsed out of
    #: free output; ``forced``: the grammar makes the output one call (with ``required`` and
    #: parallel calls allowed, one or more).
    mode: Mode = "none"
    offered: tuple[ToolDefinition, ...] = ()
    grammar: str | None = None
    max_calls: int | None = None

    @property
    def parses_calls(self) -> bool:
        """Whether the output is searched for tool calls."""
        return self.mode != "none"


NO_TOOLS = ToolPlan()


def plan_tools(request: ChatCompletionRequest, backend: StepBackend) -> ToolPlan:
    """The checked plan for ``request``'s tool fields; 400 naming the problem."""
    tools = request.tools or []
    if not tools:
        if request.tool_choice is not None:
            raise InvalidRequestError(
                "tool_choice: 'tool_choice' is only allowed when 'tools' are specified",
                param="tool_choice",
            )
        return NO_TOOLS
    _check_names(tools)
    forced = _forced_names(request.tool_choice, tools)
    for index, tool in enumerate(tools):
        _check_parameters(tool, index, enforced=forced is not None and tool.function.name in forced)
    if request.tool_choice == "none":
        return NO_TOOLS
    max_calls = 1 if request.parallel_tool_calls is False else None
    if forced is None:
        return ToolPlan("auto", tuple(tools), None, max_calls)
    if request.ignore_eos or request.min_tokens:
        raise InvalidRequestError(
            "tool_choice: ignore_eos and min_tokens cannot be combined with a forced tool call "
            "(the output ends when the call is complete)",
            param="ignore_eos" if request.ignore_eos else "min_tokens",
        )
    if isinstance(request.tool_choice, dict):
        # A named function is called once, as OpenAI and vLLM do: clients that force one
        # (instructor, LangChain's bind_tools) expect a single call, and a small model
        # otherwise repeats the call until max_tokens cuts it off.
        max_calls = 1
    chosen = [i for i, tool in enumerate(tools) if tool.function.name in forced]
    # The grammar is built from the chosen functions' parameters: one function's problem is
    # its parameters', a combination's is the tool_choice that combined them.
    param = f"tools.{chosen[0]}.function.parameters" if len(chosen) == 1 else "tool_choice"
    grammar = forced_call_grammar(
        [tools[i] for i in chosen], parallel=max_calls is None, param=param
    )
    check_backend_grammar(backend, grammar, param)
    return ToolPlan("forced", tuple(tools), grammar, max_calls)


def _check_names(tools: list[ToolDefinition]) -> None:
    seen: set[str] = set()
    for index, tool in enumerate(tools):
        name = tool.function.name
        if name in seen:
            raise InvalidRequestError(
                f"tools.{index}.function.name: the function name {name!r} is used twice",
                param=f"tools.{index}.function.name",
            )
        seen.add(name)


def _forced_names(choice: Any, tools: list[ToolDefinition]) -> frozenset[str] | None:
    """The functions one of which must be called; None when no call is forced."""
    if choice is None or choice in ("none", "auto"):
        return None
    if choice == "required":
        return frozenset(tool.function.name for tool in tools)
    if isinstance(choice, dict):
        try:
            named = NamedToolChoice.model_validate(choice)
        except ValidationError as exc:
            where = ".".join(str(part) for part in exc.errors()[0]["loc"])
            raise InvalidRequestError(
                f"tool_choice.{where}: {exc.errors()[0]['msg']}", param=f"tool_choice.{where}"
            ) from None
        if named.function.name not in {tool.function.name for tool in tools}:
            raise InvalidRequestError(
                f"tool_choice.function.name: no function named {named.function.name!r} is in tools",
                param="tool_choice.function.name",
            )
        return frozenset({named.function.name})
    raise InvalidRequestError(
        "tool_choice: must be 'none', 'auto', 'required' or "
        '{"type": "function", "function": {"name": ...}}',
        param="tool_choice",
    )


def _check_parameters(tool: ToolDefinition, index: int, *, enforced: bool) -> None:
    """400 unless the tool's parameters are a valid object schema (and, when a grammar will
    enforce them, one the grammar supports)."""
    param = f"tools.{index}.function.parameters"
    schema = tool.function.parameters
    if schema is None:
        return
    if schema.get("type", "object") != "object":
        raise InvalidRequestError(
            f"{param}: must be a JSON Schema of type 'object', got type {schema['type']!r}",
            param=param,
        )
    if enforced:
        check_schema(schema, param)
    else:
        check_valid_schema(schema, param)
