"""Turning sampled tokens into text, and stopping at stop strings."""

from __future__ import annotations

import codecs
from collections.abc import Callable, Sequence

from inferflux_core.matching import partial_match_length


class TextAssembler:
    """Decodes a sequence's tokens incrementally and finds stop strings across tokens.

    Multi-byte UTF-8 characters split across tokens come out whole. Text that might be the
    start of a stop string is held back until it is known not to be one, so a stop string
    never reaches the client, even when it spans several tokens.
    """

    def __init__(self, token_bytes: Callable[[int], bytes], stop: Sequence[str] = ()) -> None:
        self._token_bytes = token_bytes
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._stop = tuple(s for s in stop if s)
        self._held = ""

    def push(self, token: int) -> tuple[str, bool]:
        """Add one token; returns (text safe to emit now, whether a stop string was hit)."""
        text = self._held + self._decoder.decode(self._token_bytes(token))
        if not self._stop:
            return text, False
        cut = min((i for i in (text.find(s) for s in self._stop) if i >= 0), default=-1)
        if cut >= 0:
            self._held = ""
            return text[:cut], True
        hold = partial_match_length(text, self._stop)
        self._held = text[len(text) - hold :] if hold else ""
        return text[: len(text) - hold], False

    def flush(self) -> str:
        """Whatever is still held back (the sequence ended without a stop string)."""
        text = self._held + self._decoder.decode(b"", final=True)
        self._held = ""
        return text
