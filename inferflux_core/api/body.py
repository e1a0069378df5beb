"""Reading a JSON request body within the configured size, and refusing JSON that is legal
for Python's parser but not safe downstream.

Every JSON route (generation, embeddings, tokens, admin) reads its body here, so these rules
hold everywhere; each is a 400 naming where in the body the problem is:

- nesting deeper than :data:`MAX_JSON_DEPTH` objects and arrays (so no recursive code after
  the parser can hit Python's recursion limit);
- an integer outside :data:`MIN_JSON_INT`..:data:`MAX_JSON_INT` (the signed and unsigned
  64-bit ranges together), so no client integer reaches arithmetic or C code unbounded;
- ``NaN``, ``Infinity``, ``-Infinity``, or a number literal too large for a float (``1e999``);
- a lone UTF-16 surrogate written as an escape (``"\\ud800"``), which no UTF-8 encoder (the
  tokenizer's among them) accepts.

A body over :data:`POOL_PARSE_BYTES` is parsed in the worker pool, off the event loop; a
large response is encoded there with :func:`encode_json`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any

import falcon.asgi

from inferflux_core.engine.workers import default_pool
from inferflux_core.errors import InvalidRequestError, PayloadTooLargeError

#: Deepest nesting of objects and arrays in a body (the body itself is level 1).
MAX_JSON_DEPTH = 64
MIN_JSON_INT = -(1 << 63)
MAX_JSON_INT = (1 << 64) - 1
#: Bodies at least this large are parsed in the worker pool.
POOL_PARSE_BYTES = 64 * 1024
#: The longest integer literal that can be in range (``-9223372036854775808``).
_INT_DIGITS = 20
#: A ``\uD800``..``\uDFFF`` escape: the only way a JSON text can carry a surrogate.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


class _Refused:
    """A number the parser saw but the server refuses; found, with its place, by the walk."""

    __slots__ = ("why",)

    def __init__(self, why: str) -> None:
        self.why = why


class _Parser:
    """One body's parse: hooks mark refused numbers, a walk afterwards says where they are."""

    def __init__(self) -> None:
        self.refused = False

    def parse_int(self, text: str) -> int | _Refused:
        # Only a literal this long can be out of range: the common case costs one len().
        long = len(text) >= _INT_DIGITS - 1
        if long and (len(text) > _INT_DIGITS or not MIN_JSON_INT <= int(text) <= MAX_JSON_INT):
            self.refused = True
            return _Refused(
                f"the integer {text[:24]}{'...' if len(text) > 24 else ''} is outside "
                f"the 64-bit range [{MIN_JSON_INT}, {MAX_JSON_INT}]"
            )
        return int(text)

    def parse_float(self, text: str) -> float | _Refused:
        value = float(text)
        if math.isfinite(value):
            return value
        self.refused = True
        return _Refused(f"the number {text[:24]} is too large for a 64-bit float")

    def parse_constant(self, name: str) -> _Refused:
        self.refused = True
        return _Refused(f"{name} is not a JSON number; numbers must be finite")


def parse_json(data: bytes) -> Any:
    """``data`` parsed, with the rules of this module; 400 naming the place of a problem."""
    parser = _Parser()
    try:
        # UTF-8 only (RFC 8259), an optional BOM aside: json.loads would also take UTF-16
        # and UTF-32 bytes, where the surrogate-escape search below would not see escapes.
        text = data.decode("utf-8-sig")
        value = json.loads(
            text,
            parse_int=parser.parse_int,
            parse_float=parser.parse_float,
            parse_constant=parser.parse_constant,
        )
    except RecursionError:
        raise _too_deep(None) from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError among them
        raise InvalidRequestError(f"the request body is not valid JSON: {exc}") from None
    surrogates = _SURROGATE_ESCAPE.search(text) is not None
    for path, node in _walk(value, with_scalars=parser.refused or surrogates):
        if len(path) >= MAX_JSON_DEPTH and isinstance(node, dict | list):
            raise _too_deep(path)
        problem = _problem(node, surrogates)
        if problem is not None:
            where = _param(path)
            prefix = f"{where}: " if where else ""
            raise InvalidRequestError(f"{prefix}{problem}", param=where or None)
    return value


async def read_json(req: falcon.asgi.Request, limit: int) -> Any:
    """The parsed JSON body; 413 past ``limit`` bytes, 400 if it is not JSON or breaks a
    rule of this module."""
    if req.content_length is not None and req.content_length > limit:
        raise PayloadTooLargeError(
            f"the request body has {req.content_length} bytes; the limit is {limit}"
        )
    data = await req.bounded_stream.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLargeError(f"the request body exceeds the limit of {limit} bytes")
    if not data:
        raise InvalidRequestError("the request body is empty; send a JSON object")
    if len(data) < POOL_PARSE_BYTES:
        return parse_json(data)
    return await default_pool().run(parse_json, data)


def _walk(value: Any, *, with_scalars: bool) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    """Every container of ``value`` (and every scalar and key, if ``with_scalars``) with its
    path, without recursion; a container's path is as long as its nesting depth less one."""
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), value)]
    while stack:
        path, node = stack.pop()
        yield path, node
        if isinstance(node, dict):
            for key, child in node.items():
                if with_scalars:
                    yield (*path, key), _Key(key)
                if with_scalars or isinstance(child, dict | list):
                    stack.append(((*path, key), child))
        elif isinstance(node, list):
            for index, child in enumerate(node):
                if with_scalars or isinstance(child, dict | list):
                    stack.append(((*path, index), child))


class _Key(str):
    """An object key, told apart from a string value while walking."""

    __slots__ = ()


def _problem(node: Any, surrogates: bool) -> str | None:
    if isinstance(node, _Refused):
        return node.why
    if surrogates and isinstance(node, str) and _SURROGATE.search(node):
        what = "an object key" if isinstance(node, _Key) else "a string"
        return (
            f"{what} holds a lone UTF-16 surrogate (an escape in \\ud800..\\udfff without "
            "its pair), which is not valid Unicode"
        )
    return None


def _param(path: tuple[str | int, ...]) -> str:
    """A body path as a ``param``: ``messages.0.content``, as the request models name fields."""
    return ".".join(str(part) for part in path)


def _too_deep(path: tuple[str | int, ...] | None) -> InvalidRequestError:
    field = str(path[0]) if path else None
    where = f" (in {field})" if field else ""
    return InvalidRequestError(
        f"the request body's JSON is nested too deeply{where}: at most {MAX_JSON_DEPTH} "
        "levels of objects and arrays are allowed",
        param=field,
    )


#: Members of a list of numbers or strings encoded in one ``json.dumps`` call.
_ENCODE_SLICE = 4096


def encode_json(value: Any) -> bytes:
    """``value`` as UTF-8 JSON, as falcon writes ``resp.media``, encoded a piece at a time.

    ``json.dumps`` is C code that holds the GIL from start to end, so one call on a million
    token ids or thousands of vectors would stall the event loop even from a worker thread;
    between pieces the interpreter can switch to it.
    """
    return "".join(_pieces(value)).encode("utf-8")


def _pieces(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        yield "{"
        for position, (key, member) in enumerate(value.items()):
            yield ("," if position else "") + json.dumps(str(key), ensure_ascii=False) + ":"
            yield from _pieces(member)
        yield "}"
    elif isinstance(value, list) and value and isinstance(value[0], dict | list):
        yield "["
        for position, member in enumerate(value):
            if position:
                yield ","
            yield from _pieces(member)
        yield "]"
    elif isinstance(value, list) and len(value) > _ENCODE_SLICE:
        yield "["
        for start in range(0, len(value), _ENCODE_SLICE):
            chunk = json.dumps(value[start : start + _ENCODE_SLICE], ensure_ascii=False)
            yield ("," if start else "") + chunk[1:-1]
        yield "]"
    else:
        yield json.dumps(value, ensure_ascii=False)
