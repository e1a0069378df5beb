"""One choice's generated text as typed events: text deltas, and tool-call deltas parsed out.

:class:`ChoiceOutput` turns generated text into :class:`~inferflux_core.contracts.TextDelta`
and :class:`~inferflux_core.contracts.ToolCallDelta` events: each call's first delta carries
its ``id`` and ``name``, later ones fragments of its JSON ``arguments``. Streamed and whole
outputs go through the same steps, so a response reads the same either way.
"""

from __future__ import annotations

import secrets

from inferflux_core.contracts.generation import TextDelta, ToolCallDelta
from inferflux_core.tools.choice import ToolPlan
from inferflux_core.tools.families import SYNTAXES
from inferflux_core.tools.family_parser import FamilyParser
from inferflux_core.tools.parser import Arguments, CallStart, Event, Text, ToolCallParser

ID_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

OutputEvent = TextDelta | ToolCallDelta


def new_call_id() -> str:
    """An id like OpenAI's: ``call_`` and 24 random letters and digits."""
    return "call_" + "".join(secrets.choice(ID_ALPHABET) for _ in range(24))


def new_parser(plan: ToolPlan) -> ToolCallParser | FamilyParser:
    """The parser for the plan's family (Hermes for a family it does not know)."""
    syntax = SYNTAXES.get(plan.family)
    if syntax is None:
        return ToolCallParser(plan.max_calls)
    return FamilyParser(syntax, plan.max_calls)


class ChoiceOutput:
    """Events for output ``choice``, with its tool calls parsed out when the plan says so."""

    def __init__(self, plan: ToolPlan, choice: int = 0) -> None:
        self._parser = new_parser(plan) if plan.parses_calls else None
        self._choice = choice
        self.called = False

    def push(self, text: str) -> list[OutputEvent]:
        """The events for the next piece of generated text (often none or one)."""
        if self._parser is None:
            return [TextDelta(self._choice, text)] if text else []
        return self._events(self._parser.feed(text))

    def finish(self) -> list[OutputEvent]:
        """The events for text held back until the output ended."""
        if self._parser is None:
            return []
        return self._events(self._parser.finish())

    def finish_reason(self, reason: str) -> str:
        """``tool_calls`` for an output that called a tool and ended on its own."""
        return "tool_calls" if self.called and reason == "stop" else reason

    def _events(self, parsed: list[Event]) -> list[OutputEvent]:
        out: list[OutputEvent] = []
        for event in parsed:
            if isinstance(event, Text):
                out.append(TextDelta(self._choice, event.text))
            elif isinstance(event, CallStart):
                self.called = True
                out.append(ToolCallDelta(self._choice, event.index, new_call_id(), event.name))
            elif isinstance(event, Arguments) and _extends(out, event.index):
                last = out[-1]
                assert isinstance(last, ToolCallDelta)
                out[-1] = ToolCallDelta(
                    last.choice, last.call, last.id, last.name, last.arguments + event.text
                )
            else:
                out.append(ToolCallDelta(self._choice, event.index, arguments=event.text))
        return out


def _extends(events: list[OutputEvent], index: int) -> bool:
    """Whether the last event is a fragment of call ``index``'s arguments, so it can grow (a
    call's first event carries only its id and name)."""
    last = events[-1] if events else None
    return isinstance(last, ToolCallDelta) and last.call == index and last.id is None
