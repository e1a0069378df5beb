"""vLLM's ``RequestOutput`` deltas as inferflux's typed events.

One :class:`OutputTranslator` per request: each delta output becomes a ``TextDelta`` per
choice with new text (with its tokens' logprobs in inferflux's :class:`TextLogprob` shape),
a ``Finish`` when a choice ends, and :meth:`OutputTranslator.usage` the final
``UsageReport``. Logprobs of tokens that have produced no text yet (a UTF-8 character cut
across tokens) wait for the delta that shows the text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from inferflux_core.contracts import (
    Finish,
    InferenceEvent,
    TextDelta,
    TextLogprob,
    TokenAlternative,
    UsageReport,
)
from inferflux_core.contracts.generation import FinishReason
from inferflux_core.errors import InferfluxError

#: vLLM's finish reasons as inferflux's.
FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "abort": "cancelled",
    "error": "error",
}


class OutputTranslator:
    """Typed events of one request's vLLM outputs; see the module docstring."""

    def __init__(self, n: int, prompt_tokens: int, top_logprobs: int = 0) -> None:
        self.n = n
        self.top_logprobs = top_logprobs
        self.prompt_tokens = prompt_tokens
        self.cached_tokens = 0
        self.completion_tokens = 0
        self.finished: set[int] = set()
        self._pending: dict[int, list[TextLogprob]] = {}

    def events(self, output: Any) -> list[InferenceEvent]:
        """The events of one ``RequestOutput`` (output kind DELTA)."""
        if output.num_cached_tokens:
            self.cached_tokens = min(int(output.num_cached_tokens), self.prompt_tokens)
        events: list[InferenceEvent] = []
        for completion in output.outputs:
            choice = int(completion.index)
            if choice in self.finished:
                continue
            self.completion_tokens += len(completion.token_ids)
            pending = self._pending.setdefault(choice, [])
            if completion.logprobs:
                pending.extend(
                    token_logprobs(completion.token_ids, completion.logprobs, self.top_logprobs)
                )
            ended_by_token = completion.finish_reason == "stop" and not isinstance(
                getattr(completion, "stop_reason", None), str
            )
            if ended_by_token and completion.logprobs and pending:
                pending.pop()  # the EOS (or stop token) shows no text, so it has no entry
            if completion.text:
                events.append(TextDelta(choice, completion.text, tuple(pending)))
                pending.clear()
            if completion.finish_reason is not None:
                self.finished.add(choice)
                events.append(Finish(choice, FINISH_REASONS.get(completion.finish_reason, "stop")))
        return events

    def end(
        self, reason: FinishReason, error: InferfluxError | None = None
    ) -> list[InferenceEvent]:
        """A ``Finish`` with ``reason`` (and ``error``) for every choice not finished yet."""
        events: list[InferenceEvent] = []
        for choice in range(self.n):
            if choice not in self.finished:
                self.finished.add(choice)
                events.append(Finish(choice, reason, error))
        return events

    def usage(self) -> UsageReport:
        """The request's final token counts."""
        return UsageReport(self.prompt_tokens, self.completion_tokens, self.cached_tokens)


def token_logprobs(
    token_ids: Sequence[int], positions: Sequence[Mapping[int, Any] | None], top: int
) -> list[TextLogprob]:
    """One :class:`TextLogprob` per generated token: its own logprob, and the ``top`` likeliest
    tokens at its position (vLLM lists those plus the sampled one, each with its rank)."""
    entries = []
    for token, position in zip(token_ids, positions, strict=False):
        if not position:
            continue
        chosen = position.get(token)
        ranked = sorted(
            (logprob for logprob in position.values() if logprob.rank is not None),
            key=lambda logprob: logprob.rank,
        )
        alternatives = tuple(
            TokenAlternative(_text(lp), _text(lp).encode(), float(lp.logprob))
            for lp in ranked[:top]
        )
        if chosen is None:
            continue
        text = _text(chosen)
        entries.append(TextLogprob(text, text.encode(), float(chosen.logprob), alternatives))
    return entries


def _text(logprob: Any) -> str:
    return logprob.decoded_token or ""
