"""The contract a policy-store plugin implements: one versioned policy document.

The policy holds API-key records (hashes only, never a key), custom roles and the default
rate limits. A store implements two methods: :meth:`PolicyStore.read` (called on every
request, so it must be cheap) and :meth:`PolicyStore.update` (an atomic read-modify-write that
raises the version by one); a store whose reads can block also overrides
:meth:`PolicyStore.read_async`, which the server calls from its event loop. Everything
else — creating and revoking keys, roles, limits — is built on those, in this module and in
:mod:`inferflux_core.auth.policy_admin`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: ``ifx-<KEY_ID>.<secret>``: the id part of an API key.
KEY_ID_PATTERN = r"^[0-9a-f]{16}$"
#: How a key's hash is stored: the algorithm, then the hex digest.
KEY_HASH_PATTERN = r"^sha256:[0-9a-f]{64}$"
ROLE_NAME_PATTERN = r"^[a-z][a-z0-9_.:-]{0,63}$"
#: A project's name (models, adapters and keys belong to one; docs/projects.md).
PROJECT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
#: The highest ``max_priority`` a key can be given.
MAX_PRIORITY_CAP = 1_000_000


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RateLimits(_Frozen):
    """Per-minute limits; ``None`` means no limit."""

    requests_per_minute: int | None = Field(None, ge=1, le=10_000_000)
    tokens_per_minute: int | None = Field(None, ge=1, le=10_000_000_000)

    def over(self, fallback: RateLimits) -> RateLimits:
        """These limits, each unset one taken from ``fallback``."""
        return RateLimits(
            requests_per_minute=self.requests_per_minute or fallback.requests_per_minute,
            tokens_per_minute=self.tokens_per_minute or fallback.tokens_per_minute,
        )


class ApiKeyRecord(_Frozen):
    """One API key as stored: its id and the hash of the whole key, never the key itself."""

    key_id: str = Field(pattern=KEY_ID_PATTERN)
    name: str = Field(min_length=1, max_length=200)
    key_hash: str = Field(pattern=KEY_HASH_PATTERN)
    roles: tuple[str, ...] = ("user",)
    scopes: tuple[str, ...] = ()
    models: tuple[str, ...] = Field((), description="models it may use; empty means all")
    created_at: float = Field(0.0, allow_inf_nan=False)
    expires_at: float | None = Field(None, allow_inf_nan=False)
    revoked: bool = False
    revoked_at: float | None = Field(None, allow_inf_nan=False)
    limits: RateLimits = Field(default_factory=RateLimits)
    max_priority: int = Field(
        0,
        ge=0,
        le=MAX_PRIORITY_CAP,
        description="the highest request priority the key may ask for (lower is always allowed)",
    )
    project: str | None = Field(
        None,
        pattern=PROJECT_NAME_PATTERN,
        description="the project the key belongs to: it sees that project's models and "
        "unscoped ones; None: every model (docs/projects.md)",
    )

    def public(self) -> dict[str, Any]:
        """The record as the admin API shows it: everything but the hash."""
        out = self.model_dump(mode="json", exclude={"key_hash", "key_id"})
        return {"id": self.key_id, **out}


class Policy(_Frozen):
    """The whole policy. ``version`` rises by one with every write, so a rollback shows."""

    version: int = Field(0, ge=0)
    keys: dict[str, ApiKeyRecord] = Field(default_factory=dict)
    roles: dict[str, tuple[str, ...]] = Field(
        default_factory=dict, description="custom roles: name -> scopes (built-ins are fixed)"
    )
    default_limits: RateLimits = Field(default_factory=RateLimits)

    @model_validator(mode="after")
    def _keys_under_their_ids(self) -> Policy:
        for key_id, record in self.keys.items():
            if key_id != record.key_id:
                raise ValueError(f"keys.{key_id}: the record's key_id is {record.key_id!r}")
        return self

    def with_key(self, record: ApiKeyRecord) -> Policy:
        """A copy holding ``record`` (added or replaced)."""
        return self.model_copy(update={"keys": {**self.keys, record.key_id: record}})

    def with_role(self, name: str, scopes: Sequence[str] | None) -> Policy:
        """A copy with the custom role ``name`` set to ``scopes`` (``None`` removes it)."""
        roles = dict(self.roles)
        if scopes is None:
            roles.pop(name, None)
        else:
            roles[name] = tuple(scopes)
        return self.model_copy(update={"roles": roles})

    def with_default_limits(self, limits: RateLimits) -> Policy:
        """A copy with new default limits."""
        return self.model_copy(update={"default_limits": limits})

    def to_json(self) -> bytes:
        """The policy as compact UTF-8 JSON (what stores persist)."""
        return self.model_dump_json().encode()

    @classmethod
    def from_json(cls, data: bytes) -> Policy:
        """Parse and validate a stored policy (raises ``pydantic.ValidationError``)."""
        return cls.model_validate_json(data)


class PolicyStore(ABC):
    """Holds the policy. Implementations must be safe to call from several threads.

    Constructed with ``policy.options`` as keyword arguments. A store that cannot open its
    data (wrong passphrase, tampered file) raises
    :class:`~inferflux_core.errors.PolicyStoreError` from its constructor: it never starts
    empty in place of data it could not read. While serving, any exception from
    :meth:`read` or :meth:`update` refuses the request (503 ``policy_store_unavailable``) and
    is logged with the store's and the plugin's names.
    """

    #: Whether the policy outlives the process (the server only makes a development key
    #: for a store that does not).
    persistent: ClassVar[bool] = True
    #: The pydantic model of this plugin's ``options`` (see
    #: :mod:`inferflux_core.contracts.options`), or None to take them unchecked.
    options_model: ClassVar[type[BaseModel] | None] = None

    def __init__(self, **options: Any) -> None:
        self.options = options

    @abstractmethod
    def read(self) -> Policy:
        """The current policy. Called for every request: cache it, and notice outside changes."""

    async def read_async(self) -> Policy:
        """:meth:`read` for the event loop, which the server calls on every request.

        The default calls :meth:`read` directly, right for a store whose reads never block. A
        store whose reads may wait (files, locks, key derivation, the network) overrides it
        to do that work in a worker thread, answering at once while nothing has changed.
        """
        return self.read()

    @abstractmethod
    def update(self, change: Callable[[Policy], Policy]) -> Policy:
        """Apply ``change`` to the current policy atomically and return the stored result.

        The store passes the latest policy to ``change``, stores what it returns with
        ``version`` one higher, and serializes concurrent updates (threads, and for a shared
        file, processes), so no update is lost. If ``change`` raises, nothing is stored.
        """

    def close(self) -> None:  # noqa: B027 - optional, not abstract
        """Release files and locks (default: nothing to release)."""

    def get_key(self, key_id: str) -> ApiKeyRecord | None:
        """The record with ``key_id``, or None."""
        return self.read().keys.get(key_id)

    def list_keys(self) -> list[ApiKeyRecord]:
        """Every record, revoked ones included, oldest first."""
        return sorted(self.read().keys.values(), key=lambda r: (r.created_at, r.key_id))

    def put_key(self, record: ApiKeyRecord) -> Policy:
        """Create or replace the record with ``record.key_id``."""
        return self.update(lambda policy: policy.with_key(record))
