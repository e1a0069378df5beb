"""Incremental detokenizing and stop strings across token boundaries."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from inferflux_core.engine.text import TextAssembler


def _pieces(text: str, cuts: list[int]) -> list[bytes]:
    data = text.encode()
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def _run(pieces: list[bytes], stop: tuple[str, ...]) -> tuple[str, bool]:
    assembler = TextAssembler(lambda i: pieces[i], stop)
    out = []
    for i in range(len(pieces)):
        text, stopped = assembler.push(i)
        out.append(text)
        if stopped:
            return "".join(out), True
    return "".join(out) + assembler.flush(), False


@given(st.text(min_size=1, max_size=60), st.lists(st.integers(0, 400), max_size=12))
def test_without_stop_strings_output_equals_the_text(text: str, cuts: list[int]) -> None:
    assert _run(_pieces(text, cuts), ()) == (text, False)


@given(
    st.text(alphabet="abcé€ ", max_size=40),
    st.text(alphabet="abcé€ ", min_size=1, max_size=4),
    st.lists(st.integers(0, 400), max_size=12),
)
def test_output_stops_before_the_first_stop_string(text: str, stop: str, cuts: list[int]) -> None:
    output, stopped = _run(_pieces(text, cuts), (stop,))
    if stop in text:
        assert stopped
        assert output == text[: text.index(stop)]
    else:
        assert not stopped
        assert output == text


def test_stop_string_split_over_tokens_is_never_emitted() -> None:
    pieces = [b"Hello ", b"wor", b"ld", b"!"]
    assert _run(pieces, ("world",)) == ("Hello ", True)


def test_multibyte_character_split_across_tokens_comes_out_whole() -> None:
    data = "€".encode()
    assembler = TextAssembler(lambda i: [data[:1], data[1:]][i])
    assert assembler.push(0) == ("", False)
    assert assembler.push(1) == ("€", False)
