"""Finding tool calls in model output as it streams, in one linear pass.

The model calls a tool by writing ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``
(the Hermes / Qwen format that the fallback prompt teaches and the forced-call grammar
enforces). :class:`ToolCallParser` takes the output in pieces and turns it into events: text
outside the blocks, the start of a call (its name), and fragments of the call's arguments as
they are generated. It never evaluates anything and never recurses on the model's nesting: the
arguments are followed with a counter of open brackets, so adversarial output (10 KB of ``[``)
costs time linear in its length. A block that does not parse is given back as text.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass
from typing import Any

from inferflux_core.matching import partial_match_length

OPEN = "<tool_call>"
CLOSE = "</tool_call>"
#: The start of a well-formed call, up to the ``{`` that opens its arguments.
HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*"([a-zA-Z0-9_-]{1,64})"\s*,\s*"arguments"\s*:\s*(?=\{)')
#: A head longer than this will not match :data:`HEAD`; the block is then parsed whole.
HEAD_LIMIT = 160
#: Deepest nesting a whole block may have to be parsed with :mod:`json` (which recurses).
MAX_BLOCK_DEPTH = 64


@dataclass(frozen=True, slots=True)
class Text:
    """Output text outside any tool call."""

    text: str


@dataclass(frozen=True, slots=True)
class CallStart:
    """The model started call number ``index`` (from 0) of the function ``name``."""

    index: int
    name: str


@dataclass(frozen=True, slots=True)
class Arguments:
    """The next piece of call ``index``'s arguments (JSON text)."""

    index: int
    text: str


Event = Text | CallStart | Arguments


class JsonEnd:
    """Finds where a streamed JSON value closes: fed its text piece by piece, it keeps the
    nesting depth and string state between pieces."""

    def __init__(self) -> None:
        self._depth = 0
        self._in_string = False
        self._escaped = False

    def scan(self, text: str) -> int | None:
        """Where the value closes in ``text`` (index after its last ``}`` or ``]``), or None
        if it goes on past ``text``."""
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


class _State(enum.Enum):
    TEXT = "text"  # outside a block
    HEAD = "head"  # after <tool_call>, before the arguments' opening brace
    ARGUMENTS = "arguments"  # inside the arguments object
    TAIL = "tail"  # after the arguments, before </tool_call>
    BODY = "body"  # a block that did not start like HEAD: buffered to </tool_call>


class ToolCallParser:
    """Tool calls and text from output fed in pieces; see the module docstring.

    ``max_calls`` (1 for ``parallel_tool_calls: false`` or a named function) drops calls past
    that many.
    Whitespace-only text is held until more text follows; :meth:`finish` drops it when the
    output made a call, so an answer that is only calls has no content.
    """

    def __init__(self, max_calls: int | None = None) -> None:
        self.max_calls = max_calls
        self.calls = 0
        self._state = _State.TEXT
        self._buffer = ""
        self._whitespace = ""
        self._body: list[str] = []
        self._body_tail = ""
        self._json_end = JsonEnd()

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
        if self._state is _State.TEXT:
            self._text(self._buffer, events)
        elif self._state is _State.HEAD:
            self._text(OPEN + self._buffer, events)
        elif self._state is _State.BODY:
            self._whole_block("".join(self._body) + self._buffer, events)
        self._buffer = ""
        if not self.calls and self._whitespace:
            events.append(Text(self._whitespace))
        self._whitespace = ""
        return events

    # -- states: each returns True if it consumed something and the loop should go on --

    def _step(self, events: list[Event]) -> bool:
        if self._state is _State.TEXT:
            return self._in_text(events)
        if self._state is _State.HEAD:
            return self._in_head(events)
        if self._state is _State.ARGUMENTS:
            return self._in_arguments(events)
        if self._state is _State.TAIL:
            return self._in_tail()
        return self._in_body(events)

    def _in_text(self, events: list[Event]) -> bool:
        start = self._buffer.find(OPEN)
        if start < 0:
            hold = partial_match_length(self._buffer, (OPEN,))
            self._text(self._buffer[: len(self._buffer) - hold], events)
            self._buffer = self._buffer[len(self._buffer) - hold :]
            return False
        self._text(self._buffer[:start], events)
        self._buffer = self._buffer[start + len(OPEN) :]
        self._state = _State.HEAD
        return True

    def _in_head(self, events: list[Event]) -> bool:
        match = HEAD.match(self._buffer, 0, HEAD_LIMIT)
        if match is not None:
            self._buffer = self._buffer[match.end() :]
            self._start_call(match.group(1), events)
            self._json_end = JsonEnd()
            self._state = _State.ARGUMENTS
            return True
        if len(self._buffer) >= HEAD_LIMIT or CLOSE in self._buffer:
            self._state = _State.BODY
            return True
        return False

    def _in_arguments(self, events: list[Event]) -> bool:
        end = self._json_end.scan(self._buffer)
        piece = self._buffer if end is None else self._buffer[:end]
        if piece and self._keeps_call():
            events.append(Arguments(self.calls - 1, piece))
        if end is None:
            self._buffer = ""
            return False
        self._buffer = self._buffer[end:]
        self._state = _State.TAIL
        return True

    def _in_tail(self) -> bool:
        rest = self._buffer.lstrip()
        if rest.startswith("}"):
            rest = rest[1:].lstrip()
        if rest.startswith(CLOSE):
            self._buffer = rest[len(CLOSE) :]
            self._state = _State.TEXT
            return True
        if CLOSE.startswith(rest):
            return False
        # The block was not closed: the call is complete, what follows is text again.
        self._buffer = rest
        self._state = _State.TEXT
        return True

    def _in_body(self, events: list[Event]) -> bool:
        # Only the new text and the few characters before it can hold the closing tag: the
        # body is searched once, however many pieces it arrives in.
        seen = self._body_tail
        end = (seen + self._buffer).find(CLOSE)
        if end < 0:
            self._body.append(self._buffer)
            self._body_tail = (seen + self._buffer)[1 - len(CLOSE) :]
            self._buffer = ""
            return False
        body = "".join(self._body) + self._buffer
        end += len(body) - len(seen) - len(self._buffer)
        self._body, self._body_tail = [], ""
        self._whole_block(body[:end], events)
        self._buffer = body[end + len(CLOSE) :]
        self._state = _State.TEXT
        return True

    # -- helpers --

    def _whole_block(self, body: str, events: list[Event]) -> None:
        """A block in another shape: a call if it parses, else its text given back."""
        call = parse_call(body)
        if call is None:
            self._text(OPEN + body + CLOSE, events)
            return
        name, arguments = call
        self._start_call(name, events)
        if self._keeps_call():
            events.append(Arguments(self.calls - 1, arguments))

    def _start_call(self, name: str, events: list[Event]) -> None:
        self.calls += 1
        if self._keeps_call():
            events.append(CallStart(self.calls - 1, name))

    def _keeps_call(self) -> bool:
        return self.max_calls is None or self.calls <= self.max_calls

    def _text(self, text: str, events: list[Event]) -> None:
        """Emit text, holding back trailing whitespace until more text follows."""
        if not text:
            return
        text = self._whitespace + text
        kept = text.rstrip()
        self._whitespace = text[len(kept) :]
        if kept:
            events.append(Text(kept))


def parse_call(body: str) -> tuple[str, str] | None:
    """``(name, arguments JSON)`` from a call block's JSON, or None if it is not a call.

    Accepts ``arguments`` (an object, or a string holding one) or ``parameters``. Nesting is
    measured first, in one pass, so :mod:`json` never recurses deeper than
    :data:`MAX_BLOCK_DEPTH`.
    """
    if nesting_depth(body) > MAX_BLOCK_DEPTH:
        return None
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    arguments: Any = value.get("arguments", value.get("parameters"))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if nesting_depth(arguments) <= MAX_BLOCK_DEPTH else 0
        except (ValueError, RecursionError):
            return None
    if not isinstance(arguments, dict) or not re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", value["name"]):
        return None
    return value["name"], json.dumps(arguments, ensure_ascii=False)


def nesting_depth(text: str) -> int:
    """The deepest bracket nesting in ``text`` (brackets inside strings count too: an upper
    bound, found without parsing)."""
    depth = deepest = 0
    for char in text:
        if char in "{[":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "}]":
            depth -= 1
    return deepest
