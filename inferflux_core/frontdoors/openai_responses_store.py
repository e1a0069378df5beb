"""Stored responses (``store: true``): kept in memory, per owner, bounded, for a while.

Each entry belongs to the credential that made it (its principal's ``key_id``); another
owner's lookup finds nothing, exactly as for an id that never existed. The store holds at
most ``max_entries`` entries and ``max_bytes`` of their JSON, and each owner at most
``max_entries_per_owner``; the least recently used entry goes first, and an entry older than
``ttl_seconds`` is gone. It lives in one process: a restart, or another replica, has none of
them.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

DEFAULT_MAX_ENTRIES = 1024
DEFAULT_MAX_ENTRIES_PER_OWNER = 256
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_TTL_SECONDS = 3600.0


@dataclass(slots=True)
class StoredResponse:
    """One stored response: the Response object as sent, and the conversation it answered
    (its input items after the previous responses', instructions excluded)."""

    response: dict[str, Any]
    context: list[dict[str, Any]]
    size: int = 0
    stored_at: float = field(default=0.0)


class ResponseStore:
    """A bounded, per-owner LRU of :class:`StoredResponse` with a TTL; thread-safe."""

    def __init__(
        self,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_entries_per_owner: int = DEFAULT_MAX_ENTRIES_PER_OWNER,
        max_bytes: int = DEFAULT_MAX_BYTES,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self.max_entries_per_owner = max_entries_per_owner
        self.max_bytes = max_bytes
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, str], StoredResponse] = OrderedDict()
        self._per_owner: dict[str, int] = {}
        self._bytes = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    @property
    def bytes_used(self) -> int:
        """The JSON size of every entry held."""
        return self._bytes

    def put(self, owner: str, response: dict[str, Any], context: list[dict[str, Any]]) -> bool:
        """Keep ``response`` (its ``id`` is the key) for ``owner``; False when it alone is
        larger than the store (then nothing is kept)."""
        size = len(json.dumps(response, separators=(",", ":")))
        size += len(json.dumps(context, separators=(",", ":")))
        if size > self.max_bytes:
            return False
        entry = StoredResponse(response, context, size, self._clock())
        key = (owner, str(response["id"]))
        with self._lock:
            self._drop(key)
            self._entries[key] = entry
            self._bytes += size
            self._per_owner[owner] = self._per_owner.get(owner, 0) + 1
            self._evict(owner)
        return True

    def get(self, owner: str, response_id: str) -> StoredResponse | None:
        """``owner``'s entry ``response_id``; None if absent, expired or someone else's."""
        key = (owner, response_id)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if self._clock() - entry.stored_at > self.ttl_seconds:
                self._drop(key)
                return None
            self._entries.move_to_end(key)
            return entry

    def delete(self, owner: str, response_id: str) -> bool:
        """Forget ``owner``'s entry; False if there was none to forget."""
        with self._lock:
            return self._drop((owner, response_id)) is not None

    def _drop(self, key: tuple[str, str]) -> StoredResponse | None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= entry.size
            left = self._per_owner[key[0]] - 1
            if left:
                self._per_owner[key[0]] = left
            else:
                del self._per_owner[key[0]]
        return entry

    def _evict(self, owner: str) -> None:
        """Expired entries first, then the least recently used until within every bound."""
        now = self._clock()
        for key, entry in list(self._entries.items()):
            if now - entry.stored_at <= self.ttl_seconds:
                break  # entries are in use order; an older unexpired one may follow, rarely
            self._drop(key)
        if self._per_owner.get(owner, 0) > self.max_entries_per_owner:
            oldest = next(key for key in self._entries if key[0] == owner)
            self._drop(oldest)
        while self._entries and (
            len(self._entries) > self.max_entries or self._bytes > self.max_bytes
        ):
            self._drop(next(iter(self._entries)))
