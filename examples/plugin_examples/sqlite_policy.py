"""A policy store kept in SQLite (stdlib ``sqlite3``), shared by processes that open one file.

Configure it with ``policy: {store: sqlite, options: {path: /var/lib/inferflux/policy.db}}``.
The database holds one row per policy version (``policy_versions``: version, JSON document,
time written), so the history of every change stays queryable; :meth:`SqlitePolicyStore.read`
returns the newest. An update runs in a ``BEGIN IMMEDIATE`` transaction, which SQLite
serializes across threads and processes, so concurrent writers never lose an update. Keys are
stored as hashes only (the ``Policy`` model never holds a key).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from inferflux_core.contracts import Policy, PolicyStore
from inferflux_core.errors import PolicyStoreError
from inferflux_core.hookspecs import hookimpl

INFERFLUX_HOOKSPEC_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS policy_versions (
    version INTEGER PRIMARY KEY,
    document TEXT NOT NULL,
    written_at REAL NOT NULL
)
"""


class SqlitePolicyStore(PolicyStore):
    """The policy as versioned rows of one SQLite table; see the module docstring."""

    persistent = True

    def __init__(self, *, path: str, busy_timeout: float = 10.0) -> None:
        super().__init__(path=path, busy_timeout=busy_timeout)
        self.path = Path(path).expanduser()
        if not self.path.parent.is_dir():
            raise PolicyStoreError(f"the policy database's directory {self.path.parent} is missing")
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            self._db.execute(SCHEMA)
            self._cached = self._load_latest()
        except (sqlite3.DatabaseError, ValueError) as exc:
            self._db.close()
            raise PolicyStoreError(f"the policy database {self.path} is unreadable: {exc}") from exc

    def read(self) -> Policy:
        """The newest version (one indexed lookup; re-read so other processes' writes show)."""
        with self._lock:
            latest = self._db.execute("SELECT MAX(version) FROM policy_versions").fetchone()[0]
            if latest is not None and latest != self._cached.version:
                self._cached = self._load_latest()
            return self._cached

    def update(self, change: Callable[[Policy], Policy]) -> Policy:
        """Apply ``change`` to the newest version and insert the result as the next version."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                current = self._load_latest()
                changed = change(current).model_copy(update={"version": current.version + 1})
                self._db.execute(
                    "INSERT INTO policy_versions (version, document, written_at) VALUES (?, ?, ?)",
                    (changed.version, changed.to_json().decode(), time.time()),
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            self._cached = changed
            return changed

    def history(self) -> list[int]:
        """Every stored version, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT version FROM policy_versions ORDER BY version")
            return [version for (version,) in rows]

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    def _load_latest(self) -> Policy:
        row = self._db.execute(
            "SELECT document FROM policy_versions ORDER BY version DESC LIMIT 1"
        ).fetchone()
        return Policy() if row is None else Policy.from_json(row[0].encode())


@hookimpl
def register_policy_stores() -> dict[str, type[PolicyStore]]:
    """The SQLite store, as ``sqlite``."""
    return {"sqlite": SqlitePolicyStore}
