"""A conversation rendered into a prompt with the model's chat template: the next assistant
turn opened, or the final assistant message left open for the model to continue.

Continuing the final message is Anthropic's prefill (a conversation ending with an assistant
turn) and vLLM's ``continue_final_message``. As transformers does for
``continue_final_message``, the conversation is rendered without a generation prompt and cut
right after the final message's text, dropping what the template closes the turn with. A
template that does not write the final message's text as given cannot be continued: a 400.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from inferflux_core.contracts.generation import ChatMessage, InferenceRequest, ToolSpec
from inferflux_core.errors import InvalidRequestError
from inferflux_core.tools import conversation


class Renders(Protocol):
    """A model with a chat template (step-level or request-level)."""

    template: Any

    def render_chat(self, messages: list[dict[str, object]], **kwargs: object) -> str:
        """Render messages with the model's chat template."""
        ...


def render_conversation(
    model: Renders,
    messages: Sequence[ChatMessage],
    offered: Sequence[ToolSpec],
    *,
    continue_final: bool = False,
) -> str:
    """The prompt for ``messages`` with the ``offered`` tools: ending with the assistant's
    turn opened, or (``continue_final``) inside the final assistant message."""
    native = model.template is not None and model.template.uses_tools
    rendered, tools = conversation(messages, offered, native=native)
    if not continue_final:
        return model.render_chat(rendered, add_generation_prompt=True, tools=tools)
    final = check_continuable(messages)
    text = model.render_chat(rendered, add_generation_prompt=False, tools=tools)
    return cut_after(text, final, param=f"messages.{len(messages) - 1}")


def check_continuable(messages: Sequence[ChatMessage]) -> str:
    """The final message's text, when it is an assistant message that can be continued."""
    index = len(messages) - 1
    final = messages[index] if messages else None
    param = f"messages.{index}"
    if final is None or final.role != "assistant":
        raise InvalidRequestError(
            "continuing the final message needs a conversation that ends with an assistant message",
            param=param,
        )
    if final.tool_calls:
        raise InvalidRequestError(
            f"{param}: a final assistant message with tool calls cannot be continued",
            param=param,
        )
    text = final.content if isinstance(final.content, str) else ""
    if not text.strip():
        raise InvalidRequestError(
            f"{param}: the final assistant message to continue is empty", param=param
        )
    if text != text.rstrip():
        raise InvalidRequestError(
            f"{param}: the final assistant message cannot end with whitespace", param=param
        )
    return text


def cut_after(rendered: str, final: str, *, param: str) -> str:
    """``rendered`` up to the end of its last copy of ``final`` (leading whitespace a
    template trims is allowed for)."""
    needle = final.lstrip()
    at = rendered.rfind(needle)
    if at < 0:
        raise InvalidRequestError(
            f"{param}: this model's chat template does not write the final assistant message "
            "as given, so it cannot be continued",
            param=param,
            code="unsupported",
        )
    return rendered[: at + len(needle)]


def check_continuation(request: InferenceRequest, *, forced_call: bool) -> None:
    """400 when ``request`` continues its final message under a grammar: a forced tool call
    or an output constraint would start over mid-message."""
    if not request.continue_final_message:
        return
    if forced_call:
        raise InvalidRequestError(
            "tool_choice: a forced tool call cannot continue a final assistant message",
            param="tool_choice",
        )
    if request.constraint is not None:
        param = request.constraint.param
        raise InvalidRequestError(
            f"{param}: structured output cannot continue a final assistant message",
            param=param,
        )
