"""Token logprobs behind the output guardrails: a token's entry is sent only once its text is.

Chat's ``logprobs.content`` entries and the legacy completions object's columns both carry
each token's text and its likeliest alternatives, so a blocked phrase could leak through them
while the guardrails hold the text back. A choice's entries therefore pass a filter chain of
their own, fed with the tokens' text in order: an entry is released once the chain has
released all of its text unchanged; entries still held are dropped when the output is
blocked. Once a filter rewrites text (a redaction), entries can no longer be matched to
what was sent, so that choice's later entries are left out. An alternative in
``top_logprobs`` is left out when the filters would block it after the text sent before it
(its last ``CONTEXT_CHARS`` characters), so a phrase cannot be read off the alternatives
either.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable
from typing import Any, Protocol

#: A choice's logprobs object: chat's ``{"content": [...]}`` or the completions columns.
Logprobs = dict[str, Any]
_COLUMNS = ("tokens", "token_logprobs", "top_logprobs", "text_offset")
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
        self._pending: list[tuple[dict[str, Any], str]] = []
        self._released = ""
        self._lost = False
        self._chat: bool | None = None
        self._context = ""

    def push(self, logprobs: Logprobs | None, finished: bool) -> tuple[Logprobs | None, bool]:
        """The entries of ``logprobs`` (one chunk's, or a whole choice's) that may be sent
        now, in the same shape, and whether the output is blocked."""
        rows = self._rows(logprobs) if logprobs else []
        text = "".join(piece for _, piece in rows)
        out, blocked = self._chain.push(text) if text else ("", False)
        if not blocked and finished:
            rest, blocked = self._chain.finish()
            out += rest
        if blocked:
            self._pending.clear()
            return None, True
        if not self._lost:
            self._pending += rows
            self._released += out
        released = self._take()
        if finished:
            self._pending.clear()
        if logprobs is None and not released:
            return None, False
        screened = []
        for row, piece in released:
            screened.append(self._screened(row))
            self._context = (self._context + piece)[-CONTEXT_CHARS:]
        return self._shape(screened), False

    def _rows(self, logprobs: Logprobs) -> list[tuple[dict[str, Any], str]]:
        """Each token's entry, with the text it adds to the output."""
        if "content" in logprobs:
            self._chat = True
            entries = logprobs.get("content") or []
            return [(entry, self._entry_text(entry)) for entry in entries]
        self._chat = False
        columns = [logprobs.get(name) or [] for name in _COLUMNS]
        rows = [dict(zip(_COLUMNS, values, strict=True)) for values in zip(*columns, strict=True)]
        return [(row, str(row["tokens"])) for row in rows]

    def _entry_text(self, entry: dict[str, Any]) -> str:
        raw = entry.get("bytes")
        if raw is None:
            return str(entry.get("token") or "")
        return self._decoder.decode(bytes(raw))

    def _take(self) -> list[tuple[dict[str, Any], str]]:
        """The pending entries whose text the chain has released unchanged, with the text."""
        taken = []
        while self._pending and self._released.startswith(self._pending[0][1]):
            row, piece = self._pending.pop(0)
            self._released = self._released[len(piece) :]
            taken.append((row, piece))
        waiting = "".join(piece for _, piece in self._pending)
        if self._released and not waiting.startswith(self._released):
            self._lost = True
            self._pending.clear()
            self._released = ""
        return taken

    def _screened(self, row: dict[str, Any]) -> dict[str, Any]:
        """``row`` without the alternatives the filters would block where they stand."""
        if self._chat:
            alternatives = row.get("top_logprobs") or []
            kept = [alt for alt in alternatives if self._allowed(str(alt.get("token") or ""))]
            return {**row, "top_logprobs": kept} if len(kept) < len(alternatives) else row
        top = row.get("top_logprobs")
        if not top:
            return row
        kept_top = {token: value for token, value in top.items() if self._allowed(token)}
        return {**row, "top_logprobs": kept_top} if len(kept_top) < len(top) else row

    def _allowed(self, alternative: str) -> bool:
        chain = self._new_chain()
        if chain is None:
            return True
        _, blocked = chain.push(self._context + alternative)
        if not blocked:
            _, blocked = chain.finish()
        return not blocked

    def _shape(self, rows: list[dict[str, Any]]) -> Logprobs:
        if self._chat or self._chat is None:
            return {"content": rows, "refusal": None}
        return {name: [row[name] for row in rows] for name in _COLUMNS}
