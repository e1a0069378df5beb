"""A least-recently-used cache bounded in entries and in bytes, keyed by a SHA-256 digest.

Grammars and the schemas they come from can each be a megabyte: a cache keyed on their text,
bounded only by its entry count, would hold hundreds of megabytes of client data. This one
keeps a 32-byte digest per entry and drops the oldest entries once either bound is passed.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

Value = TypeVar("Value")


def digest(*parts: str) -> bytes:
    """The cache key of ``parts``: SHA-256 over them, each length-prefixed."""
    sha = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8", errors="surrogatepass")
        sha.update(len(data).to_bytes(8, "little"))
        sha.update(data)
    return sha.digest()


class BoundedCache(Generic[Value]):
    """Values by digest, least recently used dropped first past ``max_entries`` or
    ``max_bytes`` (the sizes the caller gives). ``on_evict`` is called with each dropped value.

    Thread-safe.
    """

    def __init__(
        self,
        max_entries: int,
        max_bytes: int,
        on_evict: Callable[[Value], None] | None = None,
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._on_evict = on_evict
        self._entries: OrderedDict[bytes, tuple[Value, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def size_bytes(self) -> int:
        """The sizes of the values held, summed."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> Value | None:
        """The value under ``key`` (now the most recently used), or None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self.hits += 1
            self._entries.move_to_end(key)
            return entry[0]

    def put(self, key: bytes, value: Value, size: int) -> None:
        """Hold ``value`` (``size`` bytes) under ``key``, dropping the oldest entries past
        the bounds; the newest entry is kept even when it alone passes ``max_bytes``, so a
        caller may go on using the value it just put."""
        dropped = []
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
                dropped.append(old[0])
            self._entries[key] = (value, size)
            self._bytes += size
            while len(self._entries) > 1 and (
                len(self._entries) > self.max_entries or self._bytes > self.max_bytes
            ):
                _, (oldest, oldest_size) = self._entries.popitem(last=False)
                self._bytes -= oldest_size
                dropped.append(oldest)
        if self._on_evict is not None:
            for value_dropped in dropped:
                if value_dropped is not value:
                    self._on_evict(value_dropped)

    def clear(self) -> None:
        """Drop every value (``on_evict`` gets each)."""
        with self._lock:
            values = [value for value, _ in self._entries.values()]
            self._entries.clear()
            self._bytes = 0
        if self._on_evict is not None:
            for value in values:
                self._on_evict(value)
