"""Tool calling: checking tools and tool choice, showing tools to the model, forcing calls
with a grammar, and parsing calls out of the output (whole or streamed) as typed events."""

from inferflux_core.tools.choice import NO_TOOLS, ToolPlan, plan_tools, template_family
from inferflux_core.tools.families import detect_family
from inferflux_core.tools.output import ChoiceOutput
from inferflux_core.tools.prompt import conversation, conversation_text

__all__ = [
    "NO_TOOLS",
    "ChoiceOutput",
    "ToolPlan",
    "conversation",
    "conversation_text",
    "detect_family",
    "plan_tools",
    "template_family",
]
