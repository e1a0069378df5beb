"""Speculative decoding: draft tokens by prompt lookup or with a draft model.

By prompt lookup, for a sequence in decode, the longest suffix (``ngram_max`` down to
``ngram_min`` tokens) of its prompt and output that occurred earlier proposes the tokens that
followed its most recent earlier occurrence, fewer for a shorter suffix
(:func:`match_draft_lengths`). A draft model (:mod:`.draft_model`) instead
decodes the continuation greedily, for all drafting sequences of a step together. The backend
verifies the draft in the sequence's next decode chunk (see
:class:`~inferflux_core.contracts.SequenceChunk`), so a step may yield several tokens; the
output is the same as without drafts because only sequences whose sampler is greedy and keeps
no state get any (:func:`drafts_exactly`). Each sequence adapts how many tokens it drafts to
how many were accepted (:class:`DraftLength`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from inferflux_core.config import SpeculativeConfig
from inferflux_core.contracts import SamplingParams, StepBackend
from inferflux_core.engine.draft_model import DraftModel, DraftQuery


@dataclass(frozen=True, slots=True)
class SpeculationSettings:
    """How one model drafts: up to ``num_tokens`` per step, by prompt lookup from n-grams of
    ``ngram_min`` to ``ngram_max`` tokens (unless it has a draft model, see
    :class:`Speculation`); ``enabled`` is what requests that do not say get."""

    enabled: bool = True
    num_tokens: int = 8
    ngram_max: int = 3
    ngram_min: int = 2


def speculation_settings(config: SpeculativeConfig) -> SpeculationSettings:
    """A model's ``speculative`` config as settings."""
    return SpeculationSettings(
        enabled=config.method != "off",
        num_tokens=config.num_tokens,
        ngram_max=config.ngram_max,
        ngram_min=config.ngram_min,
    )


def drafts_exactly(params: SamplingParams) -> bool:
    """True if sampling each drafted position with the sequence's sampler gives what plain
    decoding gives: greedy, no grammar, no logprobs, no penalty (logit bias is fine)."""
    return (
        params.greedy
        and params.grammar is None
        and params.llguidance is None
        and params.logprobs is None
        and (
            params.penalty_last_n == 0
            or (
                params.repeat_penalty == 1.0
                and params.presence_penalty == 0.0
                and params.frequency_penalty == 0.0
            )
        )
    )


#: Steps a sequence skips drafting after a one-token draft failed (doubling while they keep
#: failing, up to :data:`MAX_PAUSE_STEPS`): verifying even one draft token costs about 60%
#: more than a plain decode step on a 2-core CPU, so drafts that keep failing cost speed.
PAUSE_STEPS = 2
MAX_PAUSE_STEPS = 32


class DraftLength:
    """How many tokens a sequence drafts next: ``most`` at first, halved (down to 1) after a
    draft whose first token was rejected, one more (up to ``most``) after a draft accepted
    whole; a partly accepted draft leaves it as it is. A one-token draft rejected pauses
    drafting for :data:`PAUSE_STEPS` steps, twice as many each time it happens again before a
    draft is accepted. A sequence whose drafts keep failing thus costs little verification
    work, and one whose drafts are right drafts all it may."""

    __slots__ = ("_backoff", "_paused", "current", "most")

    def __init__(self, most: int) -> None:
        self.most = max(1, most)
        self.current = self.most
        self._paused = 0
        self._backoff = PAUSE_STEPS

    def next_length(self) -> int:
        """The most tokens to draft in this step (0 while paused); call once per step."""
        if self._paused > 0:
            self._paused -= 1
            return 0
        return self.current

    def verified(self, drafted: int, accepted: int) -> None:
        """``accepted`` of the ``drafted`` tokens of the last draft were accepted."""
        if drafted <= 0:
            return
        if accepted <= 0:
            if self.current == 1:
                self._paused = self._backoff
                self._backoff = min(MAX_PAUSE_STEPS, self._backoff * 2)
            self.current = max(1, self.current // 2)
            return
        self._backoff = PAUSE_STEPS
        if accepted >= drafted:
            self.current = min(self.most, self.current + 1)


def match_draft_lengths(ngram_min: int, ngram_max: int, most: int) -> dict[int, int]:
    """The most tokens a prompt-lookup match of each n-gram size drafts: ``most`` for a match
    of ``ngram_max`` tokens, half as many for each token shorter (at least 1). A short suffix
    occurs in many places, so what followed its latest occurrence is a weaker guess; drafting
    less from it wastes less verification where it is wrong."""
    return {n: max(1, most >> (ngram_max - n)) for n in range(ngram_min, ngram_max + 1)}


class Drafter:
    """Proposes nothing: the drafter of a sequence that does not speculate."""

    __slots__ = ()

    @property
    def length(self) -> int:
        """The most tokens to draft next (0: none)."""
        return 0

    def next_length(self) -> int:
        """The most tokens to draft in this step (0: none); called once per step."""
        return 0

    def propose(self, prompt: Sequence[int], generated: Sequence[int], limit: int) -> list[int]:
        """Up to ``limit`` tokens likely to follow ``prompt + generated``."""
        return []

    def verified(self, drafted: int, accepted: int) -> None:
        """``accepted`` of the ``drafted`` tokens it proposed last were accepted."""


NO_DRAFTS = Drafter()


class AdaptiveDrafter(Drafter):
    """A drafter whose draft length follows its acceptance (:class:`DraftLength`)."""

    __slots__ = ("_length",)

    def __init__(self, most: int) -> None:
        self._length = DraftLength(most)

    @property
    def length(self) -> int:
        """The most tokens to draft next."""
        return self._length.current

    def next_length(self) -> int:
        """The most tokens to draft in this step (0 while paused; see :class:`DraftLength`)."""
        return self._length.next_length()

    def verified(self, drafted: int, accepted: int) -> None:
        """Shrink or grow the next drafts (see :class:`DraftLength`)."""
        self._length.verified(drafted, accepted)


class ModelDrafter(AdaptiveDrafter):
    """A sequence's drafter with the model's draft model: :meth:`Speculation.propose` drafts
    for all such sequences of a step at once, so its own :meth:`propose` proposes nothing."""

    __slots__ = ()


class NgramDrafter(AdaptiveDrafter):
    """Prompt-lookup drafting over one sequence's tokens (see the module docstring).

    An index maps every n-gram of the history (but the one ending at its last token) to where
    its latest occurrence ends; it grows with the sequence, so a proposal costs a few dict
    lookups, not a scan.
    """

    __slots__ = ("_index", "_indexed", "_lengths", "_sizes", "_tokens")

    def __init__(self, ngram_min: int, ngram_max: int, most: int = 4) -> None:
        if not 1 <= ngram_min <= ngram_max:
            raise ValueError(f"need 1 <= ngram_min <= ngram_max, not {ngram_min}, {ngram_max}")
        super().__init__(most)
        self._sizes = range(ngram_max, ngram_min - 1, -1)
        #: The most tokens a match of each n-gram size drafts (see :func:`match_draft_lengths`).
        self._lengths = match_draft_lengths(ngram_min, ngram_max, most)
        self._tokens: list[int] = []
        self._index: dict[tuple[int, ...], int] = {}
        #: How many end positions are indexed (0 .. len(tokens) - 2 once caught up).
        self._indexed = 0

    def propose(self, prompt: Sequence[int], generated: Sequence[int], limit: int) -> list[int]:
        """The up to ``limit`` tokens that followed the latest earlier occurrence of the
        longest matching suffix of ``prompt + generated`` (empty if none occurred)."""
        tokens = self._catch_up(prompt, generated)
        n_tokens = len(tokens)
        if limit <= 0 or n_tokens < 2:
            return []
        index = self._index
        for n in self._sizes:
            if n >= n_tokens:
                continue
            end = index.get(tuple(tokens[n_tokens - n :]))
            if end is not None:
                return tokens[end + 1 : end + 1 + min(limit, self._lengths[n])]
        return []

    def _catch_up(self, prompt: Sequence[int], generated: Sequence[int]) -> list[int]:
        """The history, extended by what was generated since the last call, and indexed up
        to its second-to-last token."""
        tokens = self._tokens
        known = len(tokens)
        if known < len(prompt):
            tokens.extend(prompt[known:])
            known = len(tokens)
        n_prompt = len(prompt)
        if known < n_prompt + len(generated):
            tokens.extend(generated[known - n_prompt :])
        index = self._index
        sizes = self._sizes
        last = len(tokens) - 1
        for end in range(self._indexed, last):
            for n in sizes:
                start = end - n + 1
                if start >= 0:
                    index[tuple(tokens[start : end + 1])] = end
        self._indexed = max(self._indexed, last)
        return tokens


class Speculation:
    """Which sequences of one model draft, how many tokens a step may draft, and what
    proposes them: prompt lookup, or the model's draft model."""

    def __init__(
        self,
        settings: SpeculationSettings,
        backend: StepBackend,
        draft_model: DraftModel | None = None,
    ) -> None:
        self.settings = settings
        limit = settings.num_tokens
        if backend.independent_rows_below > 0:
            # the chunk (last token + drafts) stays below the rows computed independently
            limit = min(limit, backend.independent_rows_below - 2)
        #: Draft tokens per sequence and step (0: this model never drafts).
        self.num_tokens = max(0, limit) if backend.supports_speculation else 0
        #: The draft model that drafts for this model (None: prompt lookup does).
        self.draft_model = draft_model

    def drafter(self, params: SamplingParams, requested: bool | None) -> Drafter:
        """A new drafter for a sequence sampled with ``params`` whose request said
        ``requested`` (None: the model's default)."""
        wanted = self.settings.enabled if requested is None else requested
        if not wanted or self.num_tokens <= 0 or not drafts_exactly(params):
            return NO_DRAFTS
        if self.draft_model is not None:
            return ModelDrafter(self.num_tokens)
        return NgramDrafter(self.settings.ngram_min, self.settings.ngram_max, self.num_tokens)

    def propose(self, queries: Sequence[tuple[Drafter, DraftQuery]]) -> dict[int, list[int]]:
        """The drafts of each query's sequence by seq id (none: left out): prompt lookup per
        sequence, the draft model in one batch for all its sequences."""
        drafts: dict[int, list[int]] = {}
        batched: list[DraftQuery] = []
        for drafter, query in queries:
            if isinstance(drafter, ModelDrafter):
                batched.append(query)
            elif proposed := drafter.propose(query.prompt, query.generated, query.limit):
                drafts[query.seq_id] = proposed
        if batched and self.draft_model is not None:
            drafts.update(self.draft_model.propose(batched))
        return drafts

    def release(self, seq_id: int) -> None:
        """``seq_id``'s sequence ended or was preempted: free what drafting held for it."""
        if self.draft_model is not None:
            self.draft_model.release(seq_id)
