"""Where a conversation's first assistant turn was generated: how many of its prompt's tokens
the model had seen then.

With row classes (:mod:`~inferflux_core.engine.row_classes`), that point ends the prompt's
long region, so the rest of the conversation, earlier answers included, is prefilled as the
cache holds what was generated, and the cache of an earlier turn is reused with identical
output.
"""

from __future__ import annotations

from inferflux_core.contracts.generation import InferenceRequest
from inferflux_core.engine.chat_prompt import render_conversation
from inferflux_core.engine.model import LoadedModel
from inferflux_core.tools import ToolPlan


def first_turn_tokens(
    model: LoadedModel, request: InferenceRequest, plan: ToolPlan, tokens: list[int]
) -> int | None:
    """The length of the prompt the conversation's first assistant turn was generated from,
    when that prompt's tokens begin ``tokens``; None when the history has no assistant turn
    after another message, or the template renders the earlier prompt differently."""
    messages = request.messages or ()
    first = next(
        (i for i, message in enumerate(messages) if message.role == "assistant" and i > 0), None
    )
    if first is None or (first == len(messages) - 1 and request.continue_final_message):
        return None
    earlier = model.tokenize_prompt(render_conversation(model, messages[:first], plan.offered))
    if len(earlier) < len(tokens) and tokens[: len(earlier)] == earlier:
        return len(earlier)
    return None
