"""An in-memory policy store, for tests and programs that embed the engine."""

from __future__ import annotations

import hmac
import threading
from collections.abc import Sequence
from typing import Any

from inferflux_core.contracts import ApiKeyRecord, PolicyStore
from inferflux_core.hookspecs import hookimpl


class MemoryPolicyStore(PolicyStore):
    """Keeps API-key records in a dict; nothing survives the process."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._lock = threading.Lock()
        self._keys: dict[str, ApiKeyRecord] = {}

    def put_key(self, record: ApiKeyRecord) -> None:
        """Create or replace a record."""
        with self._lock:
            self._keys[record.key_id] = record

    def get_key(self, key_id: str) -> ApiKeyRecord | None:
        """The record with ``key_id``, or None."""
        with self._lock:
            return self._keys.get(key_id)

    def find_by_hash(self, key_hash: str) -> ApiKeyRecord | None:
        """The record with this hash; every record is compared, in constant time."""
        found = None
        with self._lock:
            for record in self._keys.values():
                if hmac.compare_digest(record.key_hash, key_hash):
                    found = record
        return found

    def list_keys(self) -> Sequence[ApiKeyRecord]:
        """All records."""
        with self._lock:
            return list(self._keys.values())

    def delete_key(self, key_id: str) -> bool:
        """Remove a record."""
        with self._lock:
            return self._keys.pop(key_id, None) is not None


@hookimpl
def register_policy_stores() -> dict[str, type[PolicyStore]]:
    """The in-memory store, as ``memory``."""
    return {"memory": MemoryPolicyStore}
