"""The fixed pattern of long and short prefill chunks that makes reuse exact at any length."""

from __future__ import annotations

import pytest

from inferflux_core.engine.row_classes import long_region_end, prefill_chunk_end, reusable_length

SHORT = 64


def chunks(n_prompt: int, long_end: int, planned: int, start: int = 0) -> list[int]:
    sizes = []
    while start < n_prompt:
        end = prefill_chunk_end(start, planned, n_prompt, long_end, SHORT)
        assert end > start
        sizes.append(end - start)
        start = end
    return sizes


def test_the_long_region_ends_at_the_first_turn_or_is_empty_when_too_short() -> None:
    assert long_region_end(500, None, SHORT) == 500
    assert long_region_end(500, 300, SHORT) == 300
    assert long_region_end(500, 40, SHORT) == 0
    assert long_region_end(50, None, SHORT) == 0


@pytest.mark.parametrize("planned", [1, 30, 64, 100, 128, 512])
@pytest.mark.parametrize(("n_prompt", "long_end"), [(530, 530), (1030, 1030), (700, 450), (90, 0)])
def test_long_chunks_fill_the_long_region_and_short_ones_the_rest(
    planned: int, n_prompt: int, long_end: int
) -> None:
    sizes = chunks(n_prompt, long_end, planned)
    position = 0
    for size in sizes:
        if position < long_end:
            assert size >= SHORT and position + size <= long_end
            assert size < max(planned, SHORT) + 2 * SHORT
        else:
            assert size < SHORT
        position += size
    assert position == n_prompt


def test_reuse_matches_classes_and_leaves_a_whole_long_chunk() -> None:
    # the same long region: any length
    assert reusable_length(700, 450, 450, SHORT) == 700
    assert reusable_length(300, 450, 450, SHORT) == 300
    # inside the region, at least one long chunk must be left to compute
    assert reusable_length(420, 450, 450, SHORT) == 450 - SHORT
    # different regions: only the long part both share
    assert reusable_length(700, 450, 600, SHORT) == 450
    assert reusable_length(700, 600, 450, SHORT) == 450
    assert reusable_length(500, 0, 450, SHORT) == 0
    assert reusable_length(500, 450, 0, SHORT) == 0


def test_a_reused_start_then_follows_the_same_pattern() -> None:
    fresh = chunks(1000, 600, 512)
    resumed = chunks(1000, 600, 512, start=reusable_length(300, 600, 600, SHORT))
    assert sum(fresh) == 1000 and sum(resumed) == 700
