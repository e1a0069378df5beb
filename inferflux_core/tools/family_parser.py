"""Tool calls in a template family's own syntax, found as the output streams, in one pass.

A :class:`Syntax` (see :mod:`inferflux_core.tools.families`) names the markers that may start
a call in the text (``[TOOL_CALLS]``, ``<|tool_calls_section_begin|>``, ...), and for each
what may follow it: a :class:`Form` (a call: a head up to its arguments, the arguments, a
tail, and optionally the close of a section holding several calls) or a :class:`Markup` (a
piece of markup that is dropped, such as gpt-oss's ``<|channel|>final<|message|>``).
:class:`FamilyParser` turns output fed in pieces into the same events as the Hermes parser
(:class:`~inferflux_core.tools.parser.Text`, ``CallStart``, ``Arguments``). A head is only
ever matched against at most :data:`HEAD_LIMIT` characters; JSON arguments are followed with
a bracket counter (no recursion, linear time); XML arguments (Qwen3-Coder's
``<parameter=k>v</parameter>``) become a JSON object, one parameter at a time. A marker that
is not followed by a call or known markup is given back as text.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass, field

from inferflux_core.matching import partial_match_length
from inferflux_core.tools.parser import (
    MAX_BLOCK_DEPTH,
    Arguments,
    CallStart,
    Event,
    Text,
    nesting_depth,
)

#: A head, tail or markup longer than this does not match; the marker is then text.
HEAD_LIMIT = 200
EMPTY = re.compile("")
PARAMETER = re.compile(r"\s*<parameter=([^>\n]{1,64})>\n?(.*?)\n?</parameter>", re.DOTALL)
PARAMETER_OPEN = "<parameter="
PARAMETER_CLOSE = "</parameter>"
FUNCTION_CLOSE = re.compile(r"\s*</function>")


@dataclass(frozen=True, slots=True)
class Form:
    """One shape of call: ``head`` matches up to the arguments (group 1: the name; it ends
    before the ``{`` of JSON arguments), ``tail`` what follows them, ``close`` the end of a
    section of calls (None: one call per marker), ``viable`` (for calls with no marker) a
    pattern every prefix of a head fully matches, so plain text is told apart at once."""

    head: re.Pattern[str]
    tail: re.Pattern[str] = EMPTY
    close: re.Pattern[str] | None = None
    xml: bool = False
    viable: re.Pattern[str] | None = None


@dataclass(frozen=True, slots=True)
class Markup:
    """Markup that is dropped; ``hide`` drops the text after it too, up to the next marker."""

    pattern: re.Pattern[str]
    hide: bool = False
    viable: re.Pattern[str] | None = None


Choice = Form | Markup


@dataclass(frozen=True, slots=True)
class Syntax:
    """A template family's calling syntax: ``markers`` and what may follow each, ``start``
    what may open the output without a marker."""

    name: str
    markers: dict[str, tuple[Choice, ...]] = field(default_factory=dict)
    start: tuple[Choice, ...] = ()


class _State(enum.Enum):
    TEXT = "text"
    DECIDE = "decide"  # after a marker (or at the start, or between calls): which choice?
    ARGUMENTS = "arguments"
    XML = "xml"
    TAIL = "tail"


class FamilyParser:
    """Tool calls and text from output fed in pieces, in ``syntax``; ``max_calls`` drops
    calls past that many. Same interface and whitespace rules as
    :class:`~inferflux_core.tools.parser.ToolCallParser`."""

    def __init__(self, syntax: Syntax, max_calls: int | None = None) -> None:
        self.syntax = syntax
        self.max_calls = max_calls
        self.calls = 0
        self._buffer = ""
        self._whitespace = ""
        self._final = False
        self._hidden = False
        self._marker = ""
        self._choices: tuple[Choice, ...] = syntax.start
        self._state = _State.DECIDE if syntax.start else _State.TEXT
        self._form: Form | None = None
        self._depth = 0
        self._in_string = False
        self._escaped = False
        self._parameters = 0
        self._scanned = 0

    def feed(self, text: str) -> list[Event]:
        """Events for the next piece of output."""
        events: list[Event] = []
        self._buffer += text
        while self._buffer and self._step(events):
            pass
        return events

    def finish(self) -> list[Event]:
        """The output ended: events for what was held back."""
        events: list[Event] = []
        self._final = True
        while self._step(events):
            pass
        if self._state is _State.TEXT:
            self._text(self._buffer, events)
            self._buffer = ""
        if not self.calls and self._whitespace and not self._hidden:
            events.append(Text(self._whitespace))
        self._whitespace = ""
        return events

    def _step(self, events: list[Event]) -> bool:
        if self._state is _State.TEXT:
            return self._in_text(events)
        if self._state is _State.DECIDE:
            return self._decide(events)
        if self._state is _State.ARGUMENTS:
            return self._in_arguments(events)
        if self._state is _State.XML:
            return self._in_xml(events)
        return self._in_tail()

    def _in_text(self, events: list[Event]) -> bool:
        found, marker = -1, ""
        for candidate in self.syntax.markers:
            at = self._buffer.find(candidate)
            if at >= 0 and (
                found < 0 or at < found or (at == found and len(candidate) > len(marker))
            ):
                found, marker = at, candidate
        if found < 0:
            hold = 0 if self._final else partial_match_length(self._buffer, self.syntax.markers)
            self._text(self._buffer[: len(self._buffer) - hold], events)
            self._buffer = self._buffer[len(self._buffer) - hold :]
            return False
        self._text(self._buffer[:found], events)
        self._buffer = self._buffer[found + len(marker) :]
        self._marker, self._choices = marker, self.syntax.markers[marker]
        self._state = _State.DECIDE
        return True

    def _decide(self, events: list[Event]) -> bool:
        for choice in self._choices:
            pattern = choice.pattern if isinstance(choice, Markup) else choice.head
            match = pattern.match(self._buffer, 0, HEAD_LIMIT)
            if match is None:
                continue
            self._buffer = self._buffer[match.end() :]
            if isinstance(choice, Markup):
                self._hidden = choice.hide
                self._state = _State.TEXT
                return True
            self._hidden = False
            self._form = choice
            self._start_call(match.group(1), events)
            self._depth, self._in_string, self._escaped = 0, False, False
            self._parameters, self._scanned = 0, 0
            self._state = _State.XML if choice.xml else _State.ARGUMENTS
            return True
        if not self._final and len(self._buffer) < HEAD_LIMIT and self._could_match():
            return False
        # Not a call nor known markup: the marker was text.
        self._text(self._marker, events)
        self._marker = ""
        self._state = _State.TEXT
        return True

    def _could_match(self) -> bool:
        for choice in self._choices:
            if choice.viable is None or choice.viable.fullmatch(self._buffer):
                return True
        return False

    def _in_arguments(self, events: list[Event]) -> bool:
        end = self._arguments_end(self._buffer)
        piece = self._buffer if end is None else self._buffer[:end]
        self._arguments(piece, events)
        if end is None:
            self._buffer = ""
            return False
        self._buffer = self._buffer[end:]
        self._state = _State.TAIL
        return True

    def _in_xml(self, events: list[Event]) -> bool:
        close = FUNCTION_CLOSE.match(self._buffer)
        if close is not None:
            self._buffer = self._buffer[close.end() :]
            self._arguments("}" if self._parameters else "{}", events)
            self._state = _State.TAIL
            return True
        rest = self._buffer.lstrip()
        if not (rest.startswith(PARAMETER_OPEN) or PARAMETER_OPEN.startswith(rest)) and not (
            "</function>".startswith(rest)
        ):
            # Not a parameter: the call ends here, and what follows is text.
            self._arguments("}" if self._parameters else "{}", events)
            self._state = _State.TEXT
            return True
        if self._buffer.find(PARAMETER_CLOSE, max(0, self._scanned - len(PARAMETER_CLOSE))) < 0:
            self._scanned = len(self._buffer)
            return False
        match = PARAMETER.match(self._buffer)
        if match is None:
            self._arguments("}" if self._parameters else "{}", events)
            self._state = _State.TEXT
            return True
        self._buffer = self._buffer[match.end() :]
        self._scanned = 0
        key = json.dumps(match.group(1).strip(), ensure_ascii=False)
        self._arguments(
            ("{" if not self._parameters else ", ") + f"{key}: {xml_value(match.group(2))}", events
        )
        self._parameters += 1
        return True

    def _in_tail(self) -> bool:
        assert self._form is not None
        match = self._form.tail.match(self._buffer, 0, HEAD_LIMIT)
        if match is None:
            if not self._final and len(self._buffer) < HEAD_LIMIT:
                return False
            self._state = _State.TEXT  # the call is complete; what follows is text
            return True
        self._buffer = self._buffer[match.end() :]
        if self._form.close is None:
            self._state = _State.TEXT
            return True
        # Inside a section: another call of the same form, or the section's close.
        self._marker, self._choices = "", (self._form, Markup(self._form.close))
        self._state = _State.DECIDE
        return True

    def _arguments_end(self, text: str) -> int | None:
        """Where the arguments object closes in ``text`` (index after its ``}``), or None."""
        depth, in_string, escaped = self._depth, self._in_string, self._escaped
        for i, char in enumerate(text):
            if in_string:
                if escaped:
                    escaped = False
                elif char == "\\":
                    escaped = True
                elif char == '"':
                    in_string = False
            elif char == '"':
                in_string = True
            elif char in "{[":
                depth += 1
            elif char in "}]":
                depth -= 1
                if depth == 0:
                    return i + 1
        self._depth, self._in_string, self._escaped = depth, in_string, escaped
        return None

    def _arguments(self, text: str, events: list[Event]) -> None:
        if text and self._keeps_call():
            events.append(Arguments(self.calls - 1, text))

    def _start_call(self, name: str, events: list[Event]) -> None:
        self.calls += 1
        if self._keeps_call():
            events.append(CallStart(self.calls - 1, name))

    def _keeps_call(self) -> bool:
        return self.max_calls is None or self.calls <= self.max_calls

    def _text(self, text: str, events: list[Event]) -> None:
        """Emit text (none while hidden), holding back trailing whitespace."""
        if not text or self._hidden:
            return
        text = self._whitespace + text
        kept = text.rstrip()
        self._whitespace = text[len(kept) :]
        if kept:
            events.append(Text(kept))


def xml_value(raw: str) -> str:
    """A ``<parameter>`` value as JSON: the value itself when it is JSON (a number, an
    object, ``true``...), else the text as a string."""
    text = raw.strip()
    if text[:1] in tuple('{["-0123456789tfn') and nesting_depth(text) <= MAX_BLOCK_DEPTH:
        try:
            return json.dumps(json.loads(text), ensure_ascii=False)
        except (ValueError, RecursionError):
            pass
    return json.dumps(raw, ensure_ascii=False)
