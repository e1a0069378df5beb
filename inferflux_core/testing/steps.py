"""Driving a :class:`~inferflux_core.contracts.StepBackend` the way the engine's step loop does."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from inferflux_core.contracts import SamplingParams, SequenceChunk, StepBackend

GREEDY = SamplingParams(temperature=0.0)


def generate(
    backend: StepBackend,
    prompts: Mapping[int, Sequence[int]],
    n_tokens: int,
    params: SamplingParams = GREEDY,
) -> dict[int, list[int]]:
    """``n_tokens`` for each sequence (past EOS too), all of them in one decode call per step.

    Opens every sequence with ``params``, prefills the prompts together, and frees the
    sequences again, also when a step fails.
    """
    for seq_id in prompts:
        backend.open_sequence(seq_id, params)
    try:
        first = backend.decode([SequenceChunk(s, p) for s, p in prompts.items()])
        return continue_decoding(backend, {s: [t] for s, t in first.items()}, n_tokens)
    finally:
        for seq_id in prompts:
            backend.free_sequence(seq_id)


def continue_decoding(
    backend: StepBackend, out: dict[int, list[int]], n_tokens: int
) -> dict[int, list[int]]:
    """Feed each open sequence its last token until it holds ``n_tokens`` generated ones."""
    while any(len(tokens) < n_tokens for tokens in out.values()):
        live = {s: tokens for s, tokens in out.items() if len(tokens) < n_tokens}
        step = backend.decode([SequenceChunk(s, (tokens[-1],)) for s, tokens in live.items()])
        for seq_id, token in step.items():
            out[seq_id].append(token)
    return out


def generate_one(
    backend: StepBackend,
    prompt: Sequence[int],
    n_tokens: int,
    params: SamplingParams = GREEDY,
    seq_id: int = 0,
) -> list[int]:
    """``n_tokens`` generated after ``prompt`` alone in sequence ``seq_id``."""
    return generate(backend, {seq_id: prompt}, n_tokens, params)[seq_id]


def until_end(backend: StepBackend, tokens: Sequence[int]) -> list[int]:
    """``tokens`` up to and including the first end-of-generation token."""
    for i, token in enumerate(tokens):
        if backend.is_end_of_generation(token):
            return list(tokens[: i + 1])
    return list(tokens)
