"""A check, at load, that a decode step computes a token as a short prompt chunk does.

On the CPU, with flash attention and one KV stream per sequence, llama.cpp computes each token
of a chunk of 1 to 63 tokens the same way, bit for bit, as measured on AMD EPYC (with and
without repacked weights, at up to 1,700 positions): a one-token decode step, a short prompt
chunk and a speculative draft being verified all give the same logits and KV. Chunks of 64 or
more run a tiled attention kernel whose results differ from those, but not from each other,
whatever their length or start. Without flash attention the one-token step differs.

What was measured on one CPU may not hold on another, so the backend checks it on the context
it serves from: the same tokens fed one at a time, then as one chunk, must give identical
logits. Only then does it promise ``kv_rows_by_chunk_class``; otherwise prefix reuse stays
with whole aligned chunks.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Sequence
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)

#: Tokens the probe feeds: enough for several attention rows, few enough to cost little.
PROBE_TOKENS = 8


def decode_matches_short_chunk(
    llama: ModuleType, ctx: Any, memory: Any, tokens: Sequence[int], n_vocab: int
) -> bool:
    """Whether feeding ``tokens`` one at a time gives the logits one chunk of them gives.

    Runs on sequence 0 of ``ctx``, which must be empty, and leaves it empty. Any failure to
    decode counts as no (the promise is then not made).
    """
    if len(tokens) < 2:
        return False
    batch = llama.llama_batch_init(len(tokens), 0, 1)
    try:
        one_by_one = [
            _feed(llama, ctx, batch, tokens[i : i + 1], i, n_vocab) for i in range(len(tokens))
        ]
        llama.llama_memory_seq_rm(memory, 0, -1, -1)
        chunk = _feed(llama, ctx, batch, tokens, 0, n_vocab)
    except RuntimeError as exc:
        log.info("llama_cpp: the row probe could not decode (%s)", exc)
        return False
    finally:
        llama.llama_memory_seq_rm(memory, 0, -1, -1)
        llama.llama_batch_free(batch)
    singles = b"".join(one_by_one)
    return singles == chunk


def _feed(
    llama: ModuleType, ctx: Any, batch: Any, tokens: Sequence[int], position: int, n_vocab: int
) -> bytes:
    """Decode ``tokens`` at ``position`` on sequence 0; the raw bytes of every row's logits."""
    batch.n_tokens = len(tokens)
    for i, token in enumerate(tokens):
        batch.token[i] = token
        batch.pos[i] = position + i
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = 0
        batch.logits[i] = 1
    code = llama.llama_decode(ctx, batch)
    if code != 0:
        raise RuntimeError(f"llama_decode returned {code}")
    row_bytes = n_vocab * ctypes.sizeof(ctypes.c_float)
    rows = []
    for i in range(len(tokens)):
        row = llama.llama_get_logits_ith(ctx, i)
        rows.append(ctypes.string_at(row, row_bytes))
    return b"".join(rows)
