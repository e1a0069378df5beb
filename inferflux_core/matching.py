"""Finding phrases in text that arrives in pieces."""

from __future__ import annotations

from collections.abc import Iterable


def partial_match_length(text: str, phrases: Iterable[str]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of some phrase.

    Streaming code holds back that many characters: they may turn out to start a phrase once
    the next piece arrives (a stop string, a blocked term).
    """
    longest = 0
    for phrase in phrases:
        for k in range(min(len(phrase) - 1, len(text)), longest, -1):
            if phrase.startswith(text[-k:]):
                longest = k
                break
    return longest
