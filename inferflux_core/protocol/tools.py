"""Tool calling fields of a chat request: ``tools``, ``tool_choice`` and assistant tool calls."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from inferflux_core.protocol.common import Name, OpenAIModel, Text
from inferflux_core.structured.limits import nesting_depth

#: OpenAI's rule for function names.
FUNCTION_NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"
#: OpenAI accepts at most this many tools in one request.
MAX_TOOLS = 128
#: Characters in a function's description.
MAX_DESCRIPTION_CHARS = 16 * 1024
#: Deepest nesting of a tool's ``parameters`` (objects and arrays, values included); the
#: schema's own size and bounds are checked where it is compiled (``structured``).
MAX_PARAMETERS_DEPTH = 32


class FunctionDefinition(OpenAIModel):
    """A function the model may call; ``parameters`` is a JSON Schema of its arguments."""

    name: str = Field(pattern=FUNCTION_NAME_PATTERN)
    description: str | None = Field(None, max_length=MAX_DESCRIPTION_CHARS)
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    @field_validator("parameters")
    @classmethod
    def _shallow(cls, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        if schema is not None and nesting_depth(schema) > MAX_PARAMETERS_DEPTH:
            raise ValueError(f"nested deeper than {MAX_PARAMETERS_DEPTH} levels")
        return schema

    def parameters_schema(self) -> dict[str, Any]:
        """``parameters``, or an object without properties when the function takes none."""
        if self.parameters is None:
            return {"type": "object", "properties": {}}
        return self.parameters


class ToolDefinition(OpenAIModel):
    """One entry of ``tools``; only functions exist."""

    type: Literal["function"]
    function: FunctionDefinition

    def template_dict(self) -> dict[str, Any]:
        """The tool as chat templates and the fallback prompt show it to the model."""
        function: dict[str, Any] = {"name": self.function.name}
        if self.function.description:
            function["description"] = self.function.description
        function["parameters"] = self.function.parameters_schema()
        return {"type": "function", "function": function}


class FunctionCall(OpenAIModel):
    """The function an assistant message called, with its arguments as a JSON string."""

    name: Name
    arguments: Text


class ToolCall(OpenAIModel):
    """A tool call in an earlier assistant message."""

    id: Name
    type: Literal["function"] = "function"
    function: FunctionCall


class FunctionName(OpenAIModel):
    """The function a named ``tool_choice`` forces."""

    name: Name


class NamedToolChoice(OpenAIModel):
    """``tool_choice: {"type": "function", "function": {"name": ...}}``."""

    type: Literal["function"]
    function: FunctionName
