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
``<parameter=k>v</parameter>``, GLM's ``<arg_key>``/``<arg_value>``, MiniMax's
``<parameter name="k">``) become a JSON object, one parameter at a time. A :class:`Block`
(LFM2's ``[f(a=1)]``, Llama 3's ``tool.call(q="x")``) is held whole, at most
:data:`BLOCK_LIMIT` characters, and parsed at its end. A marker that is not followed by a call
or known markup is given back as text.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from inferflux_core.matching import partial_match_length
from inferflux_core.tools.parser import (
    MAX_BLOCK_DEPTH,
    Arguments,
    CallStart,
    Event,
    JsonEnd,
    Text,
    nesting_depth,
)

#: A head, tail or markup longer than this does not match; the marker is then text.
HEAD_LIMIT = 200
#: A block of calls longer than this is text.
BLOCK_LIMIT = 16384
EMPTY = re.compile("")


@dataclass(frozen=True, slots=True)
class XmlArguments:
    """Arguments written one XML element per parameter: ``parameter`` matches one (groups
    ``key`` and ``value``; a ``string`` group that is ``true`` keeps the value a string),
    ``opening`` and ``closing`` are how one starts and ends, ``end`` ends the call."""

    parameter: re.Pattern[str]
    opening: str
    closing: str
    end: str


#: Qwen3-Coder and Seed-OSS: ``<parameter=k>\nv\n</parameter>`` ... ``</function>``.
QWEN_XML = XmlArguments(
    re.compile(r"\s*<parameter=(?P<key>[^>\n]{1,64})>\n?(?P<value>.*?)\n?</parameter>", re.DOTALL),
    "<parameter=",
    "</parameter>",
    "</function>",
)


@dataclass(frozen=True, slots=True)
class Form:
    """One shape of call: ``head`` matches up to the arguments (group 1: the name; it ends
    before the ``{`` of JSON arguments), ``tail`` what follows them, ``close`` the end of a
    section of calls (None: one call per marker), ``viable`` (for calls with no marker) a
    pattern every prefix of a head fully matches, so plain text is told apart at once."""

    head: re.Pattern[str]
    tail: re.Pattern[str] = EMPTY
    close: re.Pattern[str] | None = None
    xml: XmlArguments | None = None
    viable: re.Pattern[str] | None = None


@dataclass(frozen=True, slots=True)
class Markup:
    """Markup that is dropped; ``hide`` drops the text after it too, up to the next marker."""

    pattern: re.Pattern[str]
    hide: bool = False
    viable: re.Pattern[str] | None = None


@dataclass(frozen=True, slots=True)
class Block:
    """Calls written as one piece of code after ``head``, held up to ``end`` (or the output's
    end, when ``open_ended``) and parsed whole by ``parse`` into (name, JSON arguments)
    pairs; None from ``parse`` makes the marker and the block text."""

    head: re.Pattern[str]
    end: str
    parse: Callable[[str], list[tuple[str, str]] | None]
    open_ended: bool = False
    viable: re.Pattern[str] | None = None


Choice = Form | Markup | Block


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
    BLOCK = "block"
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
        self._block: Block | None = None
        self._json_end = JsonEnd()
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
        if self._state is _State.BLOCK:
            return self._in_block(events)
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
            if isinstance(choice, Block):
                self._block, self._scanned = choice, 0
                self._state = _State.BLOCK
                return True
            self._buffer = self._buffer[match.end() :]
            if isinstance(choice, Markup):
                self._hidden = choice.hide
                self._state = _State.TEXT
                return True
            self._hidden = False
            self._form = choice
            self._start_call(match.group(1), events)
            self._json_end = JsonEnd()
            self._parameters, self._scanned = 0, 0
            self._state = _State.XML if choice.xml is not None else _State.ARGUMENTS
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
        end = self._json_end.scan(self._buffer)
        piece = self._buffer if end is None else self._buffer[:end]
        self._arguments(piece, events)
        if end is None:
            self._buffer = ""
            return False
        self._buffer = self._buffer[end:]
        self._state = _State.TAIL
        return True

    def _in_xml(self, events: list[Event]) -> bool:
        assert self._form is not None and self._form.xml is not None
        xml = self._form.xml
        rest = self._buffer.lstrip()
        if rest.startswith(xml.end):
            self._buffer = rest[len(xml.end) :]
            self._arguments("}" if self._parameters else "{}", events)
            self._state = _State.TAIL
            return True
        if not (rest.startswith(xml.opening) or xml.opening.startswith(rest)) and not (
            xml.end.startswith(rest)
        ):
            # Not a parameter: the call ends here, and what follows is text.
            self._arguments("}" if self._parameters else "{}", events)
            self._state = _State.TEXT
            return True
        if self._buffer.find(xml.closing, max(0, self._scanned - len(xml.closing))) < 0:
            self._scanned = len(self._buffer)
            return False
        match = xml.parameter.match(self._buffer)
        if match is None:
            self._arguments("}" if self._parameters else "{}", events)
            self._state = _State.TEXT
            return True
        self._buffer = self._buffer[match.end() :]
        self._scanned = 0
        key = json.dumps(match["key"].strip(), ensure_ascii=False)
        as_string = "string" in xml.parameter.groupindex and match.group("string") == "true"
        raw = match["value"]
        value = json.dumps(raw, ensure_ascii=False) if as_string else xml_value(raw)
        self._arguments(("{" if not self._parameters else ", ") + f"{key}: {value}", events)
        self._parameters += 1
        return True

    def _in_block(self, events: list[Event]) -> bool:
        assert self._block is not None
        block = self._block
        at = self._buffer.find(block.end, max(0, self._scanned - len(block.end)))
        if at < 0 and len(self._buffer) <= BLOCK_LIMIT and not self._final:
            self._scanned = len(self._buffer)
            return False
        if at < 0 and (not block.open_ended or len(self._buffer) > BLOCK_LIMIT):
            calls = None
        else:
            body = self._buffer if at < 0 else self._buffer[:at]
            calls = block.parse(body) if len(body) <= BLOCK_LIMIT else None
        if calls is None:
            self._text(self._marker, events)
            self._marker = ""
            self._state = _State.TEXT
            return True
        self._buffer = "" if at < 0 else self._buffer[at + len(block.end) :]
        for name, arguments in calls:
            self._start_call(name, events)
            self._arguments(arguments, events)
        self._hidden = False
        self._state = _State.TEXT
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
