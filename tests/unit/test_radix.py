"""The radix tree against a plain reference model, with hypothesis."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from inferflux_core.engine.radix import RadixTree

TOKENS = st.lists(st.integers(0, 3), max_size=12)
OWNERS = st.integers(0, 5)


def _reference_match(model: dict[int, list[int]], tokens: list[int]) -> tuple[int, set[int]]:
    best, holders = 0, set()
    for owner, sequence in model.items():
        n = 0
        while n < min(len(sequence), len(tokens)) and sequence[n] == tokens[n]:
            n += 1
        if n > best:
            best, holders = n, {owner}
        elif n == best and n > 0:
            holders.add(owner)
    return best, holders


class RadixMachine(RuleBasedStateMachine):
    """Random inserts, removals and lookups agree with a dict of lists."""

    def __init__(self) -> None:
        super().__init__()
        self.tree = RadixTree()
        self.model: dict[int, list[int]] = {}

    @rule(owner=OWNERS, tokens=TOKENS)
    def insert(self, owner: int, tokens: list[int]) -> None:
        self.tree.insert(owner, tokens)
        self.model[owner] = tokens

    @rule(owner=OWNERS)
    def remove(self, owner: int) -> None:
        self.tree.remove(owner)
        self.model.pop(owner, None)

    @rule(tokens=TOKENS)
    def lookup(self, tokens: list[int]) -> None:
        assert self.tree.longest_match(tokens) == _reference_match(self.model, tokens)

    @invariant()
    def same_owners(self) -> None:
        assert set(self.tree.owners()) == set(self.model)
        for owner, tokens in self.model.items():
            assert self.tree.tokens(owner) == tuple(tokens)


TestRadixTree = RadixMachine.TestCase
TestRadixTree.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


@given(st.lists(TOKENS, min_size=1, max_size=6), TOKENS)
def test_every_inserted_sequence_is_found_whole(
    sequences: list[list[int]], probe: list[int]
) -> None:
    tree = RadixTree()
    for owner, tokens in enumerate(sequences):
        tree.insert(owner, tokens)
    for owner, tokens in enumerate(sequences):
        length, holders = tree.longest_match(tokens)
        assert length == len(tokens)
        if tokens:
            assert owner in holders or any(sequences[o][: len(tokens)] == tokens for o in holders)


def test_shared_system_prompt_is_found_for_a_new_question() -> None:
    tree = RadixTree()
    system = list(range(100))
    tree.insert("a", [*system, 500, 501])
    tree.insert("b", [*system, 600])
    assert tree.longest_match([*system, 700]) == (100, {"a", "b"})
    assert tree.longest_match([*system, 500, 9]) == (101, {"a"})
    tree.remove("a")
    assert tree.longest_match([*system, 500, 9]) == (100, {"b"})
