"""Token logprobs in OpenAI's shapes: chat's ``content`` list, the Responses API's (an
``output_text`` part's and a stream delta's), and the legacy completions object (``tokens``,
``token_logprobs``, ``top_logprobs``, ``text_offset``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from inferflux_core.contracts.generation import TextLogprob


def chat_logprobs(entries: Iterable[TextLogprob]) -> dict[str, Any]:
    """``choices[i].logprobs`` of a chat completion (or of one chunk of its stream)."""
    content = [
        {
            "token": e.text,
            "logprob": e.logprob,
            "bytes": list(e.bytes),
            "top_logprobs": [
                {"token": t.text, "logprob": t.logprob, "bytes": list(t.bytes)} for t in e.top
            ],
        }
        for e in entries
    ]
    return {"content": content, "refusal": None}


def part_logprobs(entries: Iterable[TextLogprob]) -> list[dict[str, Any]]:
    """An ``output_text`` part's ``logprobs`` (the Responses API's ``LogProb`` items)."""
    return chat_logprobs(entries)["content"]  # type: ignore[no-any-return]


def delta_logprobs(entries: Iterable[TextLogprob]) -> list[dict[str, Any]]:
    """A Responses stream's ``output_text.delta`` / ``.done`` ``logprobs``
    (``ResponseLogProb`` items: no bytes)."""
    return [
        {
            "token": e.text,
            "logprob": e.logprob,
            "top_logprobs": [{"token": t.text, "logprob": t.logprob} for t in e.top],
        }
        for e in entries
    ]


@dataclass(slots=True)
class CompletionLogprobs:
    """The legacy ``logprobs`` object of one completion choice, built token by token.

    ``text_offset`` counts characters from the start of the choice's text (the echoed prompt
    included), and carries on across the chunks of a stream. Each ``top_logprobs`` dict holds
    the most likely tokens and always the sampled one, so it may have one entry more than
    asked, as OpenAI's.
    """

    offset: int = 0
    tokens: list[str] = field(default_factory=list)
    token_logprobs: list[float | None] = field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = field(default_factory=list)
    text_offset: list[int] = field(default_factory=list)

    def add_prompt(self, entries: Iterable[TextLogprob]) -> None:
        """Echoed prompt tokens: listed, their logprobs null (prompt logprobs are not computed)."""
        for entry in entries:
            self._append(entry.text, None, None)

    def add(self, entries: Iterable[TextLogprob]) -> None:
        """Generated tokens with their logprobs."""
        for entry in entries:
            top = {t.text: t.logprob for t in entry.top}
            top.setdefault(entry.text, entry.logprob)
            self._append(entry.text, entry.logprob, top)

    def skip(self, text: str) -> None:
        """Text that has no entries here (an echo without logprobs) still moves the offset."""
        self.offset += len(text)

    def take(self) -> dict[str, Any]:
        """The object for what was added since the last call (a stream's chunk), then reset."""
        out = {
            "tokens": self.tokens,
            "token_logprobs": self.token_logprobs,
            "top_logprobs": self.top_logprobs,
            "text_offset": self.text_offset,
        }
        self.tokens, self.token_logprobs, self.top_logprobs, self.text_offset = [], [], [], []
        return out

    def _append(self, text: str, logprob: float | None, top: dict[str, float] | None) -> None:
        self.tokens.append(text)
        self.token_logprobs.append(logprob)
        self.top_logprobs.append(top)
        self.text_offset.append(self.offset)
        self.offset += len(text)
