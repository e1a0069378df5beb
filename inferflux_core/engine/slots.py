"""KV sequence ids of one model: free, running, and idle ones that keep a prompt for reuse."""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import cast

from inferflux_core.engine.radix import RadixTree


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
    the output is the same with reuse on or off. Idle ids are evicted least recently used
    first when an id is needed.
    """

    def __init__(self, n_slots: int, *, reuse: bool, align: int) -> None:
        self.reuse = reuse
        self.align = max(1, align)
        self.tree = RadixTree()
        self._free = list(range(n_slots - 1, -1, -1))
        self._idle: collections.OrderedDict[int, None] = collections.OrderedDict()

    def find_prefix(self, prompt: list[int]) -> PrefixHit | None:
        """The best reusable prefix of ``prompt`` (at least one token is left to prefill)."""
        if not self.reuse or not self.tree:
            return None
        matched, holders = self.tree.longest_match(prompt)
        usable = (min(matched, len(prompt) - 1) // self.align) * self.align
        if usable <= 0:
            return None
        seq_ids = cast("set[int]", holders)  # this tree's owners are seq ids
        idle = [seq_id for seq_id in seq_ids if seq_id in self._idle]
        if idle:
            return PrefixHit(usable, idle[0], idle=True)
        return PrefixHit(usable, min(seq_ids), idle=False)

    def take_idle(self, seq_id: int) -> int:
        """Claim an idle id (its KV stays) for a new sequence."""
        del self._idle[seq_id]
        self.tree.remove(seq_id)
        return seq_id

    def allocate(self) -> int | None:
        """A free id, else the least recently used idle one (its cache dropped), else None."""
        if self._free:
            return self._free.pop()
        if self._idle:
            seq_id, _ = self._idle.popitem(last=False)
            self.tree.remove(seq_id)
            return seq_id
        return None

    def prompt_prefilled(self, seq_id: int, prompt: list[int]) -> None:
        """A running sequence's whole prompt is in its KV: others may copy from it."""
        if self.reuse:
            self.tree.insert(seq_id, prompt)

    def release(self, seq_id: int, prompt_in_kv: list[int]) -> bool:
        """The sequence ended. True if its id stays idle with its KV, False if it is free."""
        self.tree.remove(seq_id)
        if self.reuse and len(prompt_in_kv) >= self.align:
            self.tree.insert(seq_id, prompt_in_kv)
            self._idle[seq_id] = None
            return True
        self._free.append(seq_id)
        return False

    def forget(self, seq_id: int) -> None:
        """The id's KV is gone (saved elsewhere or wiped): it is free."""
        self.tree.remove(seq_id)
        self._idle.pop(seq_id, None)
        self._free.append(seq_id)
