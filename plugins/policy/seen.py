"""The rollback counter beside a policy file: the highest version any process has seen.

The policy's version rises by one with every write and sits in the file's authenticated
header, so it cannot be raised or lowered without the passphrase; but an attacker who can
write the directory can put an older, genuine file back. A process remembers what it read,
and this side file (``<policy>.seen``, mode 0600) remembers it across restarts: a file whose
version is lower than the one recorded — or equal with different content — is refused, and
so is a missing policy file once a version was recorded.

Limits: whoever can replace the policy file can usually replace or delete this one too; a
deleted or rolled-back side file makes the next start accept an older policy, just as
without it. Keep the side file where the policy file's writers cannot write, or watch it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from inferflux_core.errors import PolicyStoreError
from inferflux_plugins.policy.files import atomic_write

SEEN_FORMAT = "inferflux-policy-seen"
SEEN_SUFFIX = ".seen"
MAX_SEEN_BYTES = 4096


@dataclass(frozen=True, slots=True)
class Seen:
    """A version of the policy file and the SHA-256 of its bytes."""

    version: int
    digest: str

    @classmethod
    def of(cls, version: int, data: bytes) -> Seen:
        """What to record for ``data``, which holds ``version``."""
        return cls(version, hashlib.sha256(data).hexdigest())


class SeenFile:
    """Reads and raises the recorded version; never lowers it."""

    def __init__(self, policy_path: Path) -> None:
        self.path = policy_path.with_name(policy_path.name + SEEN_SUFFIX)
        self._policy_path = policy_path

    def read(self) -> Seen | None:
        """The recorded version, or None if nothing was recorded yet."""
        try:
            with open(self.path, "rb") as handle:
                data = handle.read(MAX_SEEN_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise PolicyStoreError(f"cannot read the rollback counter {self.path}: {exc}") from None
        try:
            document = json.loads(data)
            if len(data) > MAX_SEEN_BYTES or document.get("format") != SEEN_FORMAT:
                raise ValueError("not a rollback counter")
            version, digest = document["version"], document["digest"]
            if not isinstance(version, int) or version < 0 or not isinstance(digest, str):
                raise ValueError("odd values")
        except (ValueError, KeyError, AttributeError, RecursionError):
            raise PolicyStoreError(
                f"the rollback counter {self.path} is damaged; if you trust the policy file "
                f"{self._policy_path} as it is, delete the counter and start again"
            ) from None
        return Seen(version, digest)

    def check(self, seen: Seen) -> None:
        """Refuse ``seen`` (the file just read) if it is older than the recorded version."""
        recorded = self.read()
        if recorded is None:
            return
        if seen.version < recorded.version or (
            seen.version == recorded.version and seen.digest != recorded.digest
        ):
            raise PolicyStoreError(
                f"refusing the policy file {self._policy_path}: it holds version {seen.version} "
                f"but version {recorded.version} was already in use (recorded in {self.path}); "
                "an older copy was put in its place. To restore a backup on purpose, delete "
                "the counter file"
            )

    def check_missing(self) -> None:
        """Refuse to create a new, empty policy where a version was already recorded."""
        recorded = self.read()
        if recorded is not None:
            raise PolicyStoreError(
                f"the policy file {self._policy_path} is missing, but version "
                f"{recorded.version} was already in use (recorded in {self.path}); restore "
                "the file, or delete the counter to start with an empty policy"
            )

    def raise_to(self, seen: Seen) -> None:
        """Record ``seen`` if it is newer than what is recorded (an atomic replace)."""
        recorded = self.read()
        if recorded is not None and recorded.version >= seen.version:
            return
        document = {"format": SEEN_FORMAT, "version": seen.version, "digest": seen.digest}
        try:
            atomic_write(self.path, json.dumps(document).encode())
        except OSError as exc:
            raise PolicyStoreError(
                f"cannot record the policy version in {self.path}: {exc}"
            ) from None
