"""One choice's output as OpenAI shapes it: ``content`` and ``tool_calls``, whole or streamed.

:class:`ChoiceOutput` turns generated text into chat deltas: content deltas, and for each
call a delta with ``index``, ``id``, ``type`` and ``function.name`` (``arguments`` empty)
followed by deltas with fragments of ``function.arguments``. :func:`chat_message` runs the
same steps over a complete output, so a response reads the same streamed or not.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from inferflux_core.tools.choice import ToolPlan
from inferflux_core.tools.parser import Arguments, CallStart, Event, Text, ToolCallParser

ID_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def new_call_id() -> str:
    """An id like OpenAI's: ``call_`` and 24 random letters and digits."""
    return "call_" + "".join(secrets.choice(ID_ALPHABET) for _ in range(24))


class ChoiceOutput:
    """Deltas for one choice's output, with its tool calls parsed out when the plan says so."""

    def __init__(self, plan: ToolPlan) -> None:
        self._parser = ToolCallParser(plan.max_calls) if plan.parses_calls else None
        self.called = False

    def push(self, text: str) -> list[dict[str, Any]]:
        """The deltas for the next piece of generated text (often none or one)."""
        if self._parser is None:
            return [{"content": text}] if text else []
        return self._deltas(self._parser.feed(text))

    def finish(self) -> list[dict[str, Any]]:
        """The deltas for text held back until the output ended."""
        if self._parser is None:
            return []
        return self._deltas(self._parser.finish())

    def finish_reason(self, reason: str) -> str:
        """``tool_calls`` for an output that called a tool and ended on its own."""
        return "tool_calls" if self.called and reason == "stop" else reason

    def _deltas(self, events: list[Event]) -> list[dict[str, Any]]:
        deltas: list[dict[str, Any]] = []
        for event in events:
            if isinstance(event, Text):
                deltas.append({"content": event.text})
            elif isinstance(event, CallStart):
                self.called = True
                call = {
                    "index": event.index,
                    "id": new_call_id(),
                    "type": "function",
                    "function": {"name": event.name, "arguments": ""},
                }
                deltas.append({"tool_calls": [call]})
            elif isinstance(event, Arguments) and _extends(deltas, event.index):
                deltas[-1]["tool_calls"][0]["function"]["arguments"] += event.text
            else:
                fragment = {"index": event.index, "function": {"arguments": event.text}}
                deltas.append({"tool_calls": [fragment]})
        return deltas


def _extends(deltas: list[dict[str, Any]], index: int) -> bool:
    """Whether the last delta is about call ``index``, so its arguments can grow."""
    calls: list[dict[str, Any]] = deltas[-1].get("tool_calls") or [] if deltas else []
    return bool(calls) and calls[0]["index"] == index and "id" not in calls[0]


@dataclass(slots=True)
class AssembledMessage:
    """A complete assistant message, gathered from deltas."""

    content: list[str] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)

    def add(self, delta: dict[str, Any]) -> None:
        """Fold one delta in."""
        if "content" in delta:
            self.content.append(delta["content"])
        for call in delta.get("tool_calls", ()):
            if "id" in call:
                self.tool_calls.append(
                    {"id": call["id"], "type": "function", "function": dict(call["function"])}
                )
            else:
                self.tool_calls[call["index"]]["function"]["arguments"] += call["function"][
                    "arguments"
                ]

    def as_dict(self) -> dict[str, Any]:
        """OpenAI's ``message``: ``content`` is null when the message is only tool calls, and
        ``refusal`` (a key OpenAI's schema requires) is always null: no model here refuses
        through a separate channel."""
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(self.content),
            "refusal": None,
        }
        if self.tool_calls:
            message["content"] = message["content"] or None
            message["tool_calls"] = self.tool_calls
        return message


def chat_message(plan: ToolPlan, text: str, finish_reason: str) -> tuple[dict[str, Any], str]:
    """The ``message`` and ``finish_reason`` of a complete output."""
    output = ChoiceOutput(plan)
    message = AssembledMessage()
    for delta in output.push(text) + output.finish():
        message.add(delta)
    return message.as_dict(), output.finish_reason(finish_reason)
