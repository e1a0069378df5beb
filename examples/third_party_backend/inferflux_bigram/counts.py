"""Counting byte bigrams in a text corpus: the whole "training" of the bigram model."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

#: Token ids 0..255 are the bytes; 256 is the end-of-sequence token.
EOS = 256
VOCAB_SIZE = 257


@dataclass(frozen=True, slots=True)
class BigramCounts:
    """How often each token follows each other token: ``rows[previous][next]``.

    EOS doubles as the start-of-text context, so ``rows[EOS]`` holds how documents begin.
    ``unigram`` (every token's count) is the fallback for a context never seen in the corpus.
    """

    rows: tuple[tuple[int, ...], ...]
    unigram: tuple[int, ...]

    @classmethod
    def from_text(cls, text: str, end_marker: str = "\n\n") -> BigramCounts:
        """Count bigrams in ``text``, split into documents at ``end_marker``.

        Each document is framed by EOS on both sides, which is where the model learns to stop.
        """
        rows = [[0] * VOCAB_SIZE for _ in range(VOCAB_SIZE)]
        documents = text.split(end_marker) if end_marker else [text]
        for document in documents:
            data = document.strip().encode("utf-8")
            if not data:
                continue
            tokens = [EOS, *data, EOS]
            for previous, following in itertools.pairwise(tokens):
                rows[previous][following] += 1
        unigram = tuple(sum(row[token] for row in rows) for token in range(VOCAB_SIZE))
        if not any(unigram):
            raise ValueError("the corpus holds no text")
        return cls(tuple(tuple(row) for row in rows), unigram)

    def following(self, previous: int) -> tuple[int, ...]:
        """Counts of every token after ``previous``; the unigram counts if it was never seen."""
        row = self.rows[previous]
        return row if any(row) else self.unigram
