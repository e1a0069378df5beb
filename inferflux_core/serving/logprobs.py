"""Token logprobs in OpenAI's two shapes: chat's ``content`` list and the legacy completions
object (``tokens``, ``token_logprobs``, ``top_logprobs``, ``text_offset``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from inferflux_core.contracts import TokenLogprob

TokenBytes = Callable[[int], bytes]


def token_text(token_bytes: TokenBytes, token: int) -> str:
    """A token's text; bytes that are part of a UTF-8 character become U+FFFD (as OpenAI)."""
    return token_bytes(token).decode("utf-8", errors="replace")


def chat_logprobs(token_bytes: TokenBytes, entries: Iterable[TokenLogprob]) -> dict[str, Any]:
    """``choices[i].logprobs`` of a chat completion (or of one chunk of its stream)."""

    def item(token: int, logprob: float) -> dict[str, Any]:
        return {
            "token": token_text(token_bytes, token),
            "logprob": logprob,
            "bytes": list(token_bytes(token)),
        }

    content = [
        {**item(e.token, e.logprob), "top_logprobs": [item(t, lp) for t, lp in e.top]}
        for e in entries
    ]
    return {"content": content, "refusal": None}


@dataclass(slots=True)
class CompletionLogprobs:
    """The legacy ``logprobs`` object of one completion choice, built token by token.

    ``text_offset`` counts characters from the start of the choice's text (the echoed prompt
    included), and carries on across the chunks of a stream. Each ``top_logprobs`` dict holds
    the most likely tokens and always the sampled one, so it may have one entry more than
    asked, as OpenAI's.
    """

    token_bytes: TokenBytes
    offset: int = 0
    tokens: list[str] = field(default_factory=list)
    token_logprobs: list[float | None] = field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = field(default_factory=list)
    text_offset: list[int] = field(default_factory=list)

    def add_prompt(self, prompt_tokens: Iterable[int]) -> None:
        """Echoed prompt tokens: listed, their logprobs null (prompt logprobs are not computed)."""
        for token in prompt_tokens:
            self._append(token_text(self.token_bytes, token), None, None)

    def add(self, entries: Iterable[TokenLogprob]) -> None:
        """Generated tokens with their logprobs."""
        for entry in entries:
            top = {token_text(self.token_bytes, t): lp for t, lp in entry.top}
            text = token_text(self.token_bytes, entry.token)
            top.setdefault(text, entry.logprob)
            self._append(text, entry.logprob, top)

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
