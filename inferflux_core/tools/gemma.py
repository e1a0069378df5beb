"""Gemma 4's tool-call arguments: ``call:f{key:<|"|>text<|"|>,n:3,list:[1,2]}``, the
notation llama.cpp's ``gemma4_to_json`` reads, turned into JSON. Strings are quoted with
``<|"|>`` and kept verbatim; keys are bare; numbers, ``true``, ``false`` and ``null`` are JSON's.
Nesting is bounded by :data:`~inferflux_core.tools.parser.MAX_BLOCK_DEPTH`."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

from inferflux_core.tools.parser import MAX_BLOCK_DEPTH

QUOTE = '<|"|>'
CALL = re.compile(r"call:([a-zA-Z0-9_.-]{1,64})(?=\{)")
KEY = re.compile(r"\s*([^:}]{1,256}):\s*")
NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
LITERALS = {"true": True, "false": False, "null": None}
SPACE = re.compile(r"\s*")


class _NotArguments(ValueError):
    pass


def gemma_call(source: str) -> list[tuple[str, str]] | None:
    """``call:name{...}`` as one (name, JSON arguments) pair, or None."""
    head = CALL.match(source)
    if head is None:
        return None
    try:
        arguments, end = _value(source, head.end(), 0)
        if _space(source, end) != len(source):
            return None
        return [(head.group(1), json.dumps(arguments, ensure_ascii=False))]
    except ValueError:  # _NotArguments, or a number JSON cannot hold
        return None


def _value(text: str, at: int, depth: int) -> tuple[Any, int]:
    """The value starting at ``at`` and the index after it."""
    if depth > MAX_BLOCK_DEPTH:
        raise _NotArguments("too deep")
    if text.startswith(QUOTE, at):
        end = text.find(QUOTE, at + len(QUOTE))
        if end < 0:
            raise _NotArguments("an unclosed string")
        return text[at + len(QUOTE) : end], end + len(QUOTE)
    if text.startswith("{", at):
        return _members(text, at + 1, depth)
    if text.startswith("[", at):
        return _elements(text, at + 1, depth)
    for word, value in LITERALS.items():
        if text.startswith(word, at):
            return value, at + len(word)
    number = NUMBER.match(text, at)
    if number is None:
        raise _NotArguments("not a value")
    value = json.loads(number.group())
    if isinstance(value, float) and not math.isfinite(value):
        raise _NotArguments("not a JSON number")
    return value, number.end()


def _members(text: str, at: int, depth: int) -> tuple[dict[str, Any], int]:
    pairs, at = _sequence(text, at, "}", lambda i: _member(text, i, depth))
    return dict(pairs), at


def _member(text: str, at: int, depth: int) -> tuple[tuple[str, Any], int]:
    key = KEY.match(text, at)
    if key is None:
        raise _NotArguments("not a key")
    value, at = _value(text, key.end(), depth + 1)
    return (key.group(1), value), at


def _elements(text: str, at: int, depth: int) -> tuple[list[Any], int]:
    return _sequence(text, at, "]", lambda i: _value(text, i, depth + 1))


def _sequence(
    text: str, at: int, close: str, read_item: Callable[[int], tuple[Any, int]]
) -> tuple[list[Any], int]:
    """Items read by ``read_item``, separated by commas, up to ``close``."""
    items: list[Any] = []
    at = _space(text, at)
    if text.startswith(close, at):
        return items, at + 1
    while True:
        item, at = read_item(at)
        items.append(item)
        at = _space(text, at)
        if text.startswith(close, at):
            return items, at + 1
        if not text.startswith(",", at):
            raise _NotArguments("no comma")
        at = _space(text, at + 1)


def _space(text: str, at: int) -> int:
    match = SPACE.match(text, at)
    assert match is not None
    return match.end()
