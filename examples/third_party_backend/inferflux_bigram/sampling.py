"""Picking the next token from bigram counts with temperature, top-k, top-p and min-p."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from inferflux_core.contracts import SamplingParams


def pick_token(counts: Sequence[int], params: SamplingParams, rng: random.Random) -> int:
    """The next token: the most frequent when greedy, else a draw from the filtered counts.

    Probabilities are ``count ** (1 / temperature)``, which is a softmax over log-counts at
    that temperature. ``logit_bias`` is added to the log-counts (``-inf`` bans a token; the
    engine uses that for ``ignore_eos``). Penalties are not supported by this model.
    """
    weights = _biased(counts, params)
    # sort by weight, ties broken by the lower token id, so greedy is deterministic
    ranked = sorted(
        ((w, token) for token, w in enumerate(weights) if w > 0), key=lambda c: (-c[0], c[1])
    )
    if not ranked:
        raise ValueError("every token is banned by logit_bias")
    if params.greedy:
        return ranked[0][1]
    top = ranked[0][0]  # scale to the top weight first, so low temperatures cannot overflow
    ranked = [((w / top) ** (1.0 / params.temperature), token) for w, token in ranked]
    if params.top_k > 0:
        ranked = ranked[: params.top_k]
    if params.min_p > 0.0:
        ranked = [(w, t) for w, t in ranked if w >= params.min_p * ranked[0][0]]
    if params.top_p < 1.0:
        ranked = _nucleus(ranked, params.top_p)
    return rng.choices([t for _, t in ranked], weights=[w for w, _ in ranked])[0]


def _biased(counts: Sequence[int], params: SamplingParams) -> list[float]:
    weights = [float(c) for c in counts]
    for token, bias in (params.logit_bias or {}).items():
        if 0 <= token < len(weights):
            weights[token] *= math.exp(min(bias, 700.0))  # exp(-inf) == 0 bans the token
    return weights


def _nucleus(ranked: list[tuple[float, int]], top_p: float) -> list[tuple[float, int]]:
    """The most likely tokens whose probabilities first add up to ``top_p``."""
    total = sum(w for w, _ in ranked)
    kept, mass = [], 0.0
    for weight, token in ranked:
        kept.append((weight, token))
        mass += weight / total
        if mass >= top_p:
            break
    return kept
