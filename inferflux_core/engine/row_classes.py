"""Exact prefix reuse at any length, for backends whose KV rows come in two classes.

Some backends (llama.cpp on the CPU, one KV stream per sequence, flash attention; see the
backend's ``kv_rows_by_chunk_class``) compute each token's KV in one of two ways: *short*, in a
chunk of 1 to ``short_below - 1`` tokens (a decode step is one of these), or *long*, in a chunk
of ``short_below`` tokens or more; within a class the result depends only on the tokens before
it, never on the chunk's length or where it starts. A token's KV is then fixed by the tokens
up to it and by the class each of them was computed in.

So the engine computes every prompt the same way, whatever it can reuse: its *long region*
(the first :func:`long_region_end` tokens) in long chunks, the rest in short ones. The long
region of a conversation's prompt ends where the first assistant turn in its history was
generated, so everything after that point, previous answers included, is short. A cached
sequence may then be reused up to any length where its classes and the new prompt's agree
(:func:`reusable_length`), and the output is the same as a fresh run's. Generated tokens
are decode steps, short only where the backend makes them so (its ``exact_decode_rows``:
llama.cpp computes a lone decode step over a long cache differently), so their KV is reused
only with ``scheduler.reuse_generated``.
"""

from __future__ import annotations


def long_region_end(n_prompt: int, first_turn: int | None, short_below: int) -> int:
    """Where the prompt's long region ends: at ``first_turn`` (the tokens of the prompt the
    first assistant turn was generated from; None: the whole prompt), or 0 when that is
    shorter than one long chunk (the whole prompt is then computed in short chunks)."""
    end = n_prompt if first_turn is None else max(0, min(first_turn, n_prompt))
    return end if end >= short_below else 0


def prefill_chunk_end(
    start: int, planned: int, n_prompt: int, long_end: int, short_below: int
) -> int:
    """Where a prompt chunk starting at ``start`` ends, the scheduler having planned
    ``planned`` tokens: inside the long region, a long chunk that leaves either nothing or
    at least one long chunk of the region for later; after it, a short chunk. A long chunk
    may run past the plan by less than twice ``short_below`` tokens."""
    if start < long_end:
        end = min(start + max(planned, short_below), long_end)
        left = long_end - end
        if 0 < left < short_below:
            # shrink to leave one whole long chunk, unless this one would become short
            end = (
                long_end - short_below
                if long_end - short_below - start >= short_below
                else long_end
            )
        return end
    return min(start + max(1, min(planned, short_below - 1)), n_prompt)


def reusable_length(limit: int, source_long_end: int, long_end: int, short_below: int) -> int:
    """How much of a ``limit``-token shared prefix may be reused exactly: the cached tokens'
    classes (long before ``source_long_end``) must match the new prompt's (long before
    ``long_end``), and what is left of the new prompt's long region must still make a long
    chunk."""
    usable = limit if source_long_end == long_end else min(limit, source_long_end, long_end)
    if usable < long_end and long_end - usable < short_below:
        usable = long_end - short_below
    return max(0, usable)
