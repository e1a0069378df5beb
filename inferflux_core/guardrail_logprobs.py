"""Token logprobs behind the output guardrails: a token's entry is sent only once its text is.

Each :class:`~inferflux_core.contracts.TextLogprob` carries its token's text and its likeliest
alternatives, so a blocked phrase could leak through them while the guardrails hold the text
back. A choice's entries therefore pass a filter chain of their own, fed with the tokens'
text in order: an entry is released once the chain has released all of its text unchanged;
entries still held are dropped when the output is blocked. Once a filter rewrites text (a
redaction), entries can no longer be matched to what was sent, so that choice's later
entries are left out. An alternative is left out when the filters would block it after the
text sent before it (its last ``CONTEXT_CHARS`` characters), so a phrase cannot be read off
the alternatives either. Nothing here knows a wire format.
"""

from __future__ import annotations

import codecs
import dataclasses
from collections.abc import Callable, Sequence
from typing import Protocol

from inferflux_core.contracts.generation import TextLogprob

#: How much of the text before a token its alternatives are judged with.
CONTEXT_CHARS = 128


class TextFilter(Protocol):
    """What the gate needs of a filter chain (``guardrails.FilterChain``)."""

    def push(self, text: str) -> tuple[str, bool]:
        """Text safe to send now, and whether the output is blocked."""

    def finish(self) -> tuple[str, bool]:
        """The output ended: what was held back, and whether it is blocked."""


class LogprobsGate:
    """Holds back one choice's logprob entries until the guardrails release their text."""

    def __init__(self, chain: TextFilter, new_chain: Callable[[], TextFilter | None]) -> None:
        """``chain`` filters the tokens' text; ``new_chain`` makes one to judge an alternative."""
        self._chain = chain
        self._new_chain = new_chain
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending: list[tuple[TextLogprob, str]] = []
        self._released = ""
        self._lost = False
        self._context = ""

    def push(
        self, entries: Sequence[TextLogprob], finished: bool
    ) -> tuple[tuple[TextLogprob, ...], bool]:
        """The entries (of ``entries`` and those held before) that may be sent now, and
        whether the output is blocked."""
        rows = [(entry, self._decoder.decode(entry.bytes)) for entry in entries]
        text = "".join(piece for _, piece in rows)
        out, blocked = self._chain.push(text) if text else ("", False)
        if not blocked and finished:
            rest, blocked = self._chain.finish()
            out += rest
        if blocked:
            self._pending.clear()
            return (), True
        if not self._lost:
            self._pending += rows
            self._released += out
        released = self._take()
        if finished:
            self._pending.clear()
        screened = []
        for entry, piece in released:
            screened.append(self._screened(entry))
            self._context = (self._context + piece)[-CONTEXT_CHARS:]
        return tuple(screened), False

    def _take(self) -> list[tuple[TextLogprob, str]]:
        """The pending entries whose text the chain has released unchanged, with the text."""
        taken = []
        while self._pending and self._released.startswith(self._pending[0][1]):
            entry, piece = self._pending.pop(0)
            self._released = self._released[len(piece) :]
            taken.append((entry, piece))
        waiting = "".join(piece for _, piece in self._pending)
        if self._released and not waiting.startswith(self._released):
            self._lost = True
            self._pending.clear()
            self._released = ""
        return taken

    def _screened(self, entry: TextLogprob) -> TextLogprob:
        """``entry`` without the alternatives the filters would block where they stand."""
        if not entry.top:
            return entry
        kept = tuple(alt for alt in entry.top if self._allowed(alt.text))
        return entry if len(kept) == len(entry.top) else dataclasses.replace(entry, top=kept)

    def _allowed(self, alternative: str) -> bool:
        chain = self._new_chain()
        if chain is None:
            return True
        _, blocked = chain.push(self._context + alternative)
        if not blocked:
            _, blocked = chain.finish()
        return not blocked
