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


def _released(pieces: list[bytes], stop: tuple[str, ...]) -> tuple[str, list[int]]:
    """Output text, and for each push (and the final flush) how many tokens it released."""
    assembler = TextAssembler(lambda i: pieces[i], stop)
    out, counts = [], []
    for i in range(len(pieces)):
        text, stopped = assembler.push(i)
        out.append(text)
        counts.append(assembler.take_released())
        if stopped:
            return "".join(out), counts
    out.append(assembler.flush())
    counts.append(assembler.take_released())
    return "".join(out), counts


def test_tokens_are_released_with_their_text() -> None:
    assert _released([b"Hel", b"lo", b" wo", b"rld"], ("lo w",)) == ("Hel", [0, 1, 0])
    assert _released([b"a", b"b", b"c"], ("bx",)) == ("abc", [1, 0, 2, 0])
    assert _released([b"a", b"b", b"c"], ()) == ("abc", [1, 1, 1, 0])


def test_a_token_holding_part_of_a_character_is_released_at_once() -> None:
    data = "€".encode()
    assert _released([data[:2], data[2:], b"!"], ()) == ("€!", [1, 1, 1, 0])
    # with stop strings, every token of a character waits for it (it may start a stop string)
    assert _released([data[:2], data[2:], b"!"], ("€?",)) == ("€!", [0, 0, 3, 0])
    assert _released([b"aa", data[:1], data[1:]], ("€",)) == ("aa", [1, 0, 0])


@given(
    st.text(alphabet="abcé€ ", max_size=40),
    st.text(alphabet="abcé€ ", min_size=1, max_size=4),
    st.lists(st.integers(0, 400), max_size=12),
)
def test_released_tokens_are_those_that_added_output(text: str, stop: str, cuts: list[int]) -> None:
    pieces = _pieces(text, cuts)
    output, counts = _released(pieces, (stop,))
    n_released = sum(counts)
    assert n_released <= len(pieces)
    released_bytes = b"".join(pieces[:n_released])
    if stop not in text:
        assert n_released == len(pieces)
    else:
        # every released token but a trailing character's tail starts inside the output
        assert released_bytes.decode(errors="ignore").startswith(output)
        assert len(b"".join(pieces[: n_released - 1])) < len(output.encode()) or not output
