"""A radix tree over token sequences: which owners hold the longest prefix of a prompt."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence


class _Node:
    """An edge's worth of tokens, the children after it, and every owner below it."""

    __slots__ = ("children", "edge", "owners")

    def __init__(self, edge: tuple[int, ...]) -> None:
        self.edge = edge
        self.children: dict[int, _Node] = {}
        self.owners: set[Hashable] = set()


def _common_length(a: Sequence[int], b: Sequence[int], start: int = 0) -> int:
    """How many tokens ``a[start:]`` and ``b`` share from their beginnings."""
    n = min(len(a) - start, len(b))
    i = 0
    while i < n and a[start + i] == b[i]:
        i += 1
    return i


class RadixTree:
    """Maps owners (e.g. KV sequence ids) to token sequences; finds the longest shared prefix.

    Each node stores the set of owners whose sequence runs through it, so a lookup walks the
    prompt once and knows who holds the prefix matched so far.
    """

    def __init__(self) -> None:
        self._root = _Node(())
        self._sequences: dict[Hashable, tuple[int, ...]] = {}

    def __len__(self) -> int:
        return len(self._sequences)

    def __contains__(self, owner: object) -> bool:
        return owner in self._sequences

    def tokens(self, owner: Hashable) -> tuple[int, ...]:
        """The sequence stored for ``owner``."""
        return self._sequences[owner]

    def owners(self) -> Iterable[Hashable]:
        """Every owner."""
        return self._sequences.keys()

    def insert(self, owner: Hashable, tokens: Sequence[int]) -> None:
        """Store ``tokens`` for ``owner``, replacing what it had."""
        if owner in self._sequences:
            self.remove(owner)
        sequence = tuple(tokens)
        self._sequences[owner] = sequence
        node = self._root
        node.owners.add(owner)
        i = 0
        while i < len(sequence):
            child = node.children.get(sequence[i])
            if child is None:
                child = _Node(sequence[i:])
                node.children[sequence[i]] = child
                child.owners.add(owner)
                return
            shared = _common_length(sequence, child.edge, i)
            if shared < len(child.edge):
                child = self._split(node, child, shared)
            child.owners.add(owner)
            node = child
            i += shared

    def remove(self, owner: Hashable) -> None:
        """Forget ``owner``; nodes nobody holds any more are dropped."""
        sequence = self._sequences.pop(owner, None)
        if sequence is None:
            return
        node = self._root
        node.owners.discard(owner)
        i = 0
        while i < len(sequence):
            child = node.children[sequence[i]]
            child.owners.discard(owner)
            if not child.owners:
                del node.children[sequence[i]]
                return
            node = child
            i += len(child.edge)

    def longest_match(self, tokens: Sequence[int]) -> tuple[int, set[Hashable]]:
        """The length of the longest prefix of ``tokens`` some owner holds, and those owners.

        Returns ``(0, set())`` when nobody shares even the first token.
        """
        node = self._root
        matched = 0
        holders: set[Hashable] = set()
        while matched < len(tokens):
            child = node.children.get(tokens[matched])
            if child is None:
                break
            shared = _common_length(tokens, child.edge, matched)
            matched += shared
            holders = child.owners
            if shared < len(child.edge):
                break
            node = child
        return matched, set(holders)

    @staticmethod
    def _split(parent: _Node, child: _Node, at: int) -> _Node:
        """Cut ``child``'s edge after ``at`` tokens; returns the new middle node."""
        middle = _Node(child.edge[:at])
        middle.owners = set(child.owners)
        child.edge = child.edge[at:]
        middle.children[child.edge[0]] = child
        parent.children[middle.edge[0]] = middle
        return middle
