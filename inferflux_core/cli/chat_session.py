"""``inferctl chat`` with no message: an interactive conversation with a server.

Each reply streams as it is generated; the whole conversation goes with every turn. Input:

- a line ending in ``\\`` continues on the next line; a line of ``\"\"\"`` starts a block
  that ends at the next ``\"\"\"`` line (for pasting text);
- ``/system TEXT`` sets the system message (``/system`` alone shows it), ``/model NAME``
  switches model (``/model`` alone shows it), ``/clear`` forgets the conversation,
  ``/help`` lists these, ``/exit`` or Ctrl-D ends the session;
- Ctrl-C while a reply streams stops it (the connection closes, so the server cancels the
  request) and the turn is forgotten; Ctrl-C at the prompt clears the line, and a second
  one in a row ends the session.

Line editing and input history come from ``readline`` where Python has it.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, field
from typing import Any, TextIO

import httpx

from inferflux_core.cli.ctl_client import chat_delta, get_json, stream_text
from inferflux_core.errors import InferfluxError

PROMPT = ">>> "
CONTINUATION = "... "
BLOCK = '"""'
HELP = """\
/system TEXT   set the system message (/system alone shows it)
/model NAME    switch model (/model alone shows it)
/clear         forget the conversation
/exit          end the session (or Ctrl-D)
A line ending in \\ continues; \"\"\" on its own line starts and ends a block.
Ctrl-C stops a reply; at the prompt it clears the line, twice ends the session."""


@dataclass
class ChatSession:
    """One conversation: its model, system message, history and sampling fields."""

    client: httpx.Client
    model: str
    system: str | None
    sampling: dict[str, Any]
    history: list[dict[str, str]] = field(default_factory=list)
    out: TextIO = field(default_factory=lambda: sys.stdout)

    def messages(self, user: str) -> list[dict[str, str]]:
        """What the next turn sends: the system message, the history, the new message."""
        system = [{"role": "system", "content": self.system}] if self.system else []
        return [*system, *self.history, {"role": "user", "content": user}]

    def turn(self, user: str) -> None:
        """Send ``user``, stream the reply; both join the history unless Ctrl-C stops it."""
        body = {"model": self.model, "messages": self.messages(user), **self.sampling}
        reply: list[str] = []
        try:
            for text in stream_text(self.client, "/v1/chat/completions", body, chat_delta):
                reply.append(text)
                self.out.write(text)
                self.out.flush()
        except KeyboardInterrupt:
            self.out.write("\n[reply cancelled]\n")
            return
        except (InferfluxError, httpx.HTTPError) as exc:
            message = exc.message if isinstance(exc, InferfluxError) else str(exc)
            self.out.write(f"\ninferctl: error: {message}\n")
            return
        self.out.write("\n")
        self.history += [
            {"role": "user", "content": user},
            {"role": "assistant", "content": "".join(reply)},
        ]

    def command(self, line: str) -> bool:
        """Run a ``/`` command; False when the session ends."""
        name, _, argument = line.partition(" ")
        argument = argument.strip()
        if name in ("/exit", "/quit"):
            return False
        if name == "/clear":
            self.history.clear()
            self.say("conversation cleared")
        elif name == "/system":
            if argument:
                self.system = argument
            self.say(f"system: {self.system or '(none)'}")
        elif name == "/model":
            if argument:
                try:
                    get_json(self.client, f"/v1/models/{argument}")
                except InferfluxError as exc:
                    self.say(f"inferctl: error: {exc.message}")
                    return True
                self.model = argument
            self.say(f"model: {self.model}")
        elif name == "/help":
            self.say(HELP)
        else:
            self.say(f"unknown command {name}; /help lists them")
        return True

    def say(self, text: str) -> None:
        """A line from inferctl itself."""
        self.out.write(text + "\n")
        self.out.flush()


def read_message(first: str) -> str:
    """``first`` and the lines it continues into: ``\\`` continuations, ``\"\"\"`` blocks."""
    if first.strip() == BLOCK:
        lines = []
        while (line := input(CONTINUATION)).strip() != BLOCK:
            lines.append(line)
        return "\n".join(lines)
    lines = []
    line = first
    while line.endswith("\\"):
        lines.append(line[:-1])
        line = input(CONTINUATION)
    lines.append(line)
    return "\n".join(lines)


def run_session(session: ChatSession) -> int:
    """Read messages and commands until ``/exit``, Ctrl-D or two Ctrl-C in a row."""
    with contextlib.suppress(ImportError):  # Windows has no readline: plain input()
        import readline  # noqa: F401  (line editing and history for input())
    session.say(f"inferctl chat with {session.model}; /help for commands, /exit to leave")
    interrupted = False
    while True:
        try:
            line = input(PROMPT)
            message = read_message(line)
        except EOFError:
            session.say("")
            return 0
        except KeyboardInterrupt:
            if interrupted:
                session.say("")
                return 0
            interrupted = True
            session.say("\n(Ctrl-C again to leave)")
            continue
        interrupted = False
        if not message.strip():
            continue
        if message.startswith("/"):
            if not session.command(message.strip()):
                return 0
            continue
        session.turn(message)
