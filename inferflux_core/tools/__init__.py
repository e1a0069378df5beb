"""Tool calling for chat completions: checking tool fields, showing tools to the model,
forcing calls with a grammar, and parsing calls out of the output (whole or streamed)."""

from inferflux_core.tools.choice import NO_TOOLS, ToolPlan, plan_tools
from inferflux_core.tools.output import ChoiceOutput, chat_message
from inferflux_core.tools.prompt import conversation_text, render_prompt

__all__ = [
    "NO_TOOLS",
    "ChoiceOutput",
    "ToolPlan",
    "chat_message",
    "conversation_text",
    "plan_tools",
    "render_prompt",
]
