"""Turning sampled tokens into text, and stopping at stop strings."""

from __future__ import annotations

import codecs
import collections
from collections.abc import Callable, Sequence

from inferflux_core.matching import partial_match_length


class TextAssembler:
    """Decodes a sequence's tokens incrementally and finds stop strings across tokens.

    Multi-byte UTF-8 characters split across tokens come out whole. Text that might be the
    start of a stop string is held back until it is known not to be one, so a stop string
    never reaches the client, even when it spans several tokens.

    It also counts which pushed tokens the released text covers (:meth:`take_released`), so
    per-token data such as logprobs can follow the text: a token is released once all its
    text is, and at a stop string the tokens that added text before it are released and
    those wholly inside it are dropped.
    """

    def __init__(self, token_bytes: Callable[[int], bytes], stop: Sequence[str] = ()) -> None:
        self._token_bytes = token_bytes
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._stop = tuple(s for s in stop if s)
        self._held = ""
        self._produced = 0  # characters decoded so far
        self._emitted = 0  # characters released so far
        self._spans: collections.deque[tuple[int, int]] = collections.deque()
        self._released = 0
        #: The stop string that ended the text, once one did.
        self.matched: str | None = None

    def push(self, token: int) -> tuple[str, bool]:
        """Add one token; returns (text safe to emit now, whether a stop string was hit)."""
        decoded = self._decoder.decode(self._token_bytes(token))
        start = self._produced
        self._produced += len(decoded)
        self._spans.append((start, self._produced))
        text = self._held + decoded
        if not self._stop:
            return self._emit(text), False
        found = [(i, s) for s, i in ((s, text.find(s)) for s in self._stop) if i >= 0]
        if found:
            cut, self.matched = min(found, key=lambda hit: hit[0])
            self._held = ""
            out = self._emit(text[:cut])
            self._release_started()
            return out, True
        hold = partial_match_length(text, self._stop)
        self._held = text[len(text) - hold :] if hold else ""
        return self._emit(text[: len(text) - hold]), False

    def flush(self) -> str:
        """Whatever is still held back (the sequence ended without a stop string)."""
        text = self._held + self._decoder.decode(b"", final=True)
        self._held = ""
        out = self._emit(text)
        self._released += len(self._spans)
        self._spans.clear()
        return out

    def take_released(self) -> int:
        """How many pushed tokens the text released since the last call covers."""
        released, self._released = self._released, 0
        return released

    def _emit(self, text: str) -> str:
        self._emitted += len(text)
        spans = self._spans
        # With stop strings, a token that decoded to nothing yet (the first bytes of a
        # character) waits for its character: if a stop string starts there, it is dropped.
        waits = bool(self._stop)
        while spans and spans[0][1] <= self._emitted:
            if waits and spans[0][0] == spans[0][1] == self._emitted:
                break
            spans.popleft()
            self._released += 1
        return text

    def _release_started(self) -> None:
        """At a stop string: tokens that added text before it count, the rest are dropped."""
        spans = self._spans
        while spans and spans[0][0] < self._emitted:
            spans.popleft()
            self._released += 1
        spans.clear()
