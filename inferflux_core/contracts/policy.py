"""The contract a policy-store plugin implements (API keys, roles, limits)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """One API key as stored: never the key itself, only its hash."""

    key_id: str
    name: str
    key_hash: str
    scopes: tuple[str, ...] = ("inference", "models:read")
    models: tuple[str, ...] = ()
    expires_at: float | None = None
    revoked: bool = False
    limits: Mapping[str, int] = field(default_factory=dict)


class PolicyStore(ABC):
    """Holds API keys and policy. Implementations must be safe to call from several threads."""

    def __init__(self, **options: Any) -> None:
        self.options = options

    @abstractmethod
    def put_key(self, record: ApiKeyRecord) -> None:
        """Create or replace the record with ``record.key_id``."""

    @abstractmethod
    def get_key(self, key_id: str) -> ApiKeyRecord | None:
        """The record, or None."""

    @abstractmethod
    def find_by_hash(self, key_hash: str) -> ApiKeyRecord | None:
        """The record whose hash equals ``key_hash`` (compared in constant time), or None."""

    @abstractmethod
    def list_keys(self) -> Sequence[ApiKeyRecord]:
        """Every record, revoked ones included."""

    @abstractmethod
    def delete_key(self, key_id: str) -> bool:
        """Remove a record; True if it existed."""
