"""KV sequence ids of one model: free, running, and idle ones that keep a prompt for reuse."""

from __future__ import annotations

import collections
import heapq
from dataclasses import dataclass
from typing import cast

from inferflux_core.engine.radix import RadixTree
from inferflux_core.engine.row_classes import long_region_end, reusable_length


@dataclass(frozen=True, slots=True)
class PrefixHit:
    """A prompt prefix some sequence already holds in its KV."""

    n_tokens: int
    source: int
    idle: bool


class KVSlots:
    """Hands out KV ``seq_id`` s and remembers which prompt each one holds.

    With reuse on, a finished sequence's id becomes *idle*: its KV stays, and its prompt goes
    into a radix tree next to the prompts of running sequences that finished prefill. A new
    prompt that shares a prefix either takes over the idle id holding it (no copy) or gets a
    copy from a running one. Reused lengths are cut to a multiple of ``align`` (the prefill
    chunk), so the reused KV was computed by exactly the chunks a fresh prefill would run and
    the output is the same with reuse on or off. When the backend computes chunks shorter than
    ``independent_below`` tokens row by row (its ``independent_rows_below``), a prefix may also
    end inside the last chunk, provided that chunk is that short (and longer than one token)
    both in the new prompt and in the prompt that left the KV, and at least two tokens are
    left to prefill: every token involved is then computed the same way either way. Idle ids
    are evicted least recently used first when an id is needed.

    With ``row_classes`` (the backend's ``kv_rows_by_chunk_class``), alignment gives way to
    :mod:`~inferflux_core.engine.row_classes`: each cached sequence records where its long
    region ended, and a prefix is reused up to any length where the classes agree.

    With ``reuse_generated`` a finished sequence's generated tokens stay reusable too (the
    next turn of a conversation then skips the previous answer). That is exact only when the
    backend computes decode steps as short prompt chunks (see ``exact_decode_rows``).

    Prompts are kept per LoRA adapter (``adapter``; None: the base model): KV computed under
    one adapter is never reused under another.
    """

    def __init__(
        self,
        n_slots: int,
        *,
        reuse: bool,
        align: int,
        independent_below: int = 0,
        row_classes: bool = False,
        reuse_generated: bool = False,
    ) -> None:
        self.reuse = reuse
        self.align = max(1, align)
        self.independent_below = independent_below
        #: Whether reuse follows :mod:`~inferflux_core.engine.row_classes` (see the class).
        self.row_classes = row_classes and independent_below > 1
        self._long_ends: dict[int, int] = {}
        #: Whether a finished sequence's generated tokens stay reusable too (inexact).
        self.reuse_generated = reuse_generated
        self._trees: dict[str | None, RadixTree] = {}
        self._adapter_of: dict[int, str | None] = {}
        self._free = list(range(n_slots))  # a heap: the lowest free id goes first
        self._idle: collections.OrderedDict[int, None] = collections.OrderedDict()
        self._prompt_lengths: dict[int, int] = {}

    def find_prefix(
        self, prompt: list[int], adapter: str | None = None, long_end: int | None = None
    ) -> PrefixHit | None:
        """The best reusable prefix of ``prompt`` under ``adapter`` (at least one token is
        left to prefill); ``long_end`` is where the prompt's long region ends (row classes;
        None: where a prompt without a conversation history has it)."""
        tree = self._trees.get(adapter)
        if not self.reuse or not tree:
            return None
        matched, holders = tree.longest_match(prompt)
        limit = min(matched, len(prompt) - 1)
        # Idle holders first (taken over without a copy), then the lowest id.
        seq_ids = cast("set[int]", holders)  # this tree's owners are seq ids
        ordered = sorted(seq_ids, key=lambda seq_id: (seq_id not in self._idle, seq_id))
        best: PrefixHit | None = None
        new_end = self._long_end(len(prompt), long_end)
        for seq_id in ordered:
            if self.row_classes:
                source_end = self._long_ends.get(seq_id, 0)
                usable = reusable_length(limit, source_end, new_end, self.independent_below)
            else:
                usable = self._usable(limit, len(prompt), self._prompt_lengths[seq_id])
            if usable > 0 and (best is None or usable > best.n_tokens):
                best = PrefixHit(usable, seq_id, idle=seq_id in self._idle)
        return best

    def _usable(self, limit: int, n_prompt: int, n_source: int) -> int:
        """How much of a ``limit``-token shared prefix may be reused with identical output."""
        aligned = (limit // self.align) * self.align
        if aligned == limit or not self.independent_below:
            return aligned
        # The chunk that starts at ``aligned``, in the new prompt and in the source's. A
        # one-token chunk is computed like a decode step, not like a row of a longer chunk:
        # the source's must be longer, and at least two tokens are left to prefill.
        ours = min(self.align, n_prompt - aligned)
        theirs = min(self.align, n_source - aligned)
        partial = min(limit, n_prompt - 2)
        if partial > aligned and theirs >= 2 and max(ours, theirs) < self.independent_below:
            return partial
        return aligned

    def take_idle(self, seq_id: int) -> int:
        """Claim an idle id (its KV stays) for a new sequence."""
        del self._idle[seq_id]
        self._forget_prompt(seq_id)
        return seq_id

    def allocate(self) -> int | None:
        """The lowest free id, else the least recently used idle one (its cache dropped), else
        None."""
        if self._free:
            # The lowest id keeps running ids contiguous where it can: llama.cpp puts only
            # consecutive seq_ids into one ubatch, and each gap costs a graph pass.
            return heapq.heappop(self._free)
        if self._idle:
            seq_id, _ = self._idle.popitem(last=False)
            self._forget_prompt(seq_id)
            return seq_id
        return None

    def prompt_prefilled(
        self,
        seq_id: int,
        prompt: list[int],
        adapter: str | None = None,
        long_end: int | None = None,
    ) -> None:
        """A running sequence's whole prompt is in its KV (computed under ``adapter``, its
        long region ending at ``long_end``; None: as :meth:`find_prefix` reads it): others
        under the same adapter may copy from it."""
        if self.reuse:
            self._remember_prompt(seq_id, prompt, adapter, long_end)

    def release(
        self,
        seq_id: int,
        prompt_in_kv: list[int],
        adapter: str | None = None,
        long_end: int | None = None,
    ) -> bool:
        """The sequence ended with ``prompt_in_kv`` in its KV (its long region ending at
        ``long_end``; None: as :meth:`find_prefix` reads it). True if its id stays idle with
        its KV, False if it is free."""
        self._forget_prompt(seq_id)
        n_kept = len(prompt_in_kv)
        # Kept if a prompt that goes on from this one could reuse any of it.
        keep = n_kept > 0 if self.row_classes else self._usable(n_kept, n_kept + 2, n_kept) > 0
        if self.reuse and keep:
            self._remember_prompt(seq_id, prompt_in_kv, adapter, long_end)
            self._idle[seq_id] = None
            return True
        heapq.heappush(self._free, seq_id)
        return False

    def forget(self, seq_id: int) -> None:
        """The id's KV is gone (saved elsewhere or wiped): it is free."""
        self._forget_prompt(seq_id)
        self._idle.pop(seq_id, None)
        heapq.heappush(self._free, seq_id)

    def _long_end(self, n_tokens: int, long_end: int | None) -> int:
        """``long_end``, or for None where a prompt of ``n_tokens`` without a conversation
        history has its long region (row classes)."""
        if long_end is not None:
            return long_end
        return long_region_end(n_tokens, None, self.independent_below)

    def _remember_prompt(
        self, seq_id: int, prompt: list[int], adapter: str | None, long_end: int | None
    ) -> None:
        tree = self._trees.get(adapter)
        if tree is None:
            tree = self._trees[adapter] = RadixTree()
        tree.insert(seq_id, prompt)
        self._adapter_of[seq_id] = adapter
        self._prompt_lengths[seq_id] = len(prompt)
        self._long_ends[seq_id] = self._long_end(len(prompt), long_end)

    def _forget_prompt(self, seq_id: int) -> None:
        if seq_id in self._adapter_of:
            self._trees[self._adapter_of.pop(seq_id)].remove(seq_id)
        self._prompt_lengths.pop(seq_id, None)
        self._long_ends.pop(seq_id, None)
