"""Which cached prefixes KVSlots offers for reuse, and when a finished sequence stays idle."""

from __future__ import annotations

from inferflux_core.engine.slots import KVSlots, PrefixHit

SHARED = list(range(1000, 1025))


def _prompt(n: int, tag: int) -> list[int]:
    """``n`` tokens: the shared 25, then ones unique to ``tag``."""
    return (SHARED + [tag * 10_000 + i for i in range(n)])[:n]


def _slots(independent_below: int, align: int = 512) -> KVSlots:
    return KVSlots(4, reuse=True, align=align, independent_below=independent_below)


def test_only_whole_chunks_are_reused_without_a_backend_promise() -> None:
    slots = _slots(independent_below=0, align=16)
    source = _prompt(50, 1)
    slots.prompt_prefilled(slots.allocate() or 0, source)
    hit = slots.find_prefix(_prompt(50, 2))
    assert hit == PrefixHit(16, 0, idle=False)


def test_a_prefix_ending_inside_a_short_last_chunk_is_reused_whole() -> None:
    slots = _slots(independent_below=64)
    seq_id = slots.allocate()
    assert seq_id is not None
    slots.prompt_prefilled(seq_id, _prompt(50, 1))
    assert slots.find_prefix(_prompt(50, 2)) == PrefixHit(25, seq_id, idle=False)


def test_no_partial_reuse_when_the_new_prompts_chunk_is_long() -> None:
    slots = _slots(independent_below=64)
    slots.prompt_prefilled(slots.allocate() or 0, _prompt(50, 1))
    assert slots.find_prefix(_prompt(100, 2)) is None


def test_no_partial_reuse_when_the_sources_chunk_was_long() -> None:
    slots = _slots(independent_below=64)
    slots.prompt_prefilled(slots.allocate() or 0, _prompt(100, 1))
    assert slots.find_prefix(_prompt(50, 2)) is None


def test_partial_reuse_after_whole_chunks() -> None:
    slots = _slots(independent_below=64, align=32)
    shared = list(range(70))
    slots.prompt_prefilled(slots.allocate() or 0, [*shared, 1, 2, 3])
    # Chunks [0, 32) and [32, 64) are whole; the last one, [64, 80), is short in both.
    hit = slots.find_prefix([*shared, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16])
    assert hit is not None and hit.n_tokens == 70


def test_a_finished_short_prompt_stays_idle_for_reuse_and_is_preferred() -> None:
    slots = _slots(independent_below=64)
    running, finished = slots.allocate(), slots.allocate()
    assert running is not None and finished is not None
    slots.prompt_prefilled(running, _prompt(40, 1))
    assert slots.release(finished, _prompt(40, 3)) is True
    hit = slots.find_prefix(_prompt(40, 2))
    assert hit == PrefixHit(25, finished, idle=True)
    assert slots.take_idle(finished) == finished
    assert slots.find_prefix(_prompt(40, 2)) == PrefixHit(25, running, idle=False)


def test_without_a_promise_a_short_prompt_is_not_kept() -> None:
    slots = _slots(independent_below=0)
    seq_id = slots.allocate()
    assert seq_id is not None
    assert slots.release(seq_id, _prompt(40, 1)) is False
    assert slots.find_prefix(_prompt(40, 2)) is None


def test_a_repeated_prompt_leaves_two_tokens_to_prefill() -> None:
    slots = _slots(independent_below=64)
    prompt = _prompt(40, 1)
    seq_id = slots.allocate()
    assert seq_id is not None
    slots.release(seq_id, prompt)
    assert slots.find_prefix(prompt) == PrefixHit(38, seq_id, idle=True)


def test_the_lowest_free_id_goes_first_so_running_ids_stay_contiguous() -> None:
    slots = KVSlots(4, reuse=False, align=16)
    assert [slots.allocate() for _ in range(3)] == [0, 1, 2]
    slots.release(2, [])
    slots.release(0, [])
    assert [slots.allocate(), slots.allocate(), slots.allocate()] == [0, 2, 3]
