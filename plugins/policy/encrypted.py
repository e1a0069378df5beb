"""The encrypted file policy store: one file, sealed (see :mod:`.sealed`), shared by processes.

Options (``policy.options``):

- ``path``: the policy file (created, mode 0600, if it does not exist; its directory must).
- ``allow_plaintext`` (default false): without ``INFERFLUX_POLICY_PASSPHRASE``, keep the file
  as plain JSON and log a warning, instead of refusing to start.
- ``lock_timeout`` (default 10 s): how long a write waits for another process's.

Writes are atomic — a temporary file in the same directory, fsync, rename over the old file,
fsync the directory — and serialized across processes by a lock file next to the policy, each
one re-reading the file under the lock, so concurrent writers lose nothing. Reads notice a
file another process replaced (``inferflux admin`` while the server runs) by its ``stat`` and
reopen it; the passphrase's scrypt runs once per file, never per request, and the server's
reads (:meth:`EncryptedFilePolicyStore.read_async`) do the reopening — file lock, scrypt for
a new salt — in a worker thread, off the event loop. A file that cannot be trusted — wrong
passphrase, truncated, tampered, unknown format, or older than one already seen (rolled back:
checked against this process's memory and against the rollback counter beside the file, see
:mod:`.seen`) — is refused with a message naming it, never replaced by an empty policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from filelock import FileLock, Timeout
from pydantic import Field, ValidationError

from inferflux_core.contracts import PluginOptions, Policy, PolicyStore
from inferflux_core.errors import PolicyStoreError
from inferflux_core.hookspecs import hookimpl
from inferflux_plugins.policy.files import atomic_write
from inferflux_plugins.policy.sealed import SealedCodec, SealError, is_sealed
from inferflux_plugins.policy.seen import Seen, SeenFile

#: The version of inferflux's hook contract this plugin was written against.
INFERFLUX_HOOKSPEC_VERSION = 1

log = logging.getLogger(__name__)

PASSPHRASE_ENV = "INFERFLUX_POLICY_PASSPHRASE"
PLAIN_FORMAT = "inferflux-policy"


class Codec(Protocol):
    """Turns a policy into file bytes and back."""

    def encode(self, policy: Policy) -> bytes:
        """The file's bytes."""

    def decode(self, data: bytes) -> Policy:
        """The policy, or SealError."""


class PlainCodec:
    """Unencrypted JSON, for ``allow_plaintext`` without a passphrase."""

    def encode(self, policy: Policy) -> bytes:
        """``{"format": ..., "format_version": 1, "policy": {...}}``."""
        document = {"format": PLAIN_FORMAT, "format_version": 1, "policy": policy.model_dump()}
        return json.dumps(document, indent=1).encode()

    def decode(self, data: bytes) -> Policy:
        """The policy in a plaintext file; refuses a sealed one."""
        if is_sealed(data):
            raise SealError(f"it is encrypted: set {PASSPHRASE_ENV} to open it")
        try:
            document = json.loads(data)
            if document.get("format") != PLAIN_FORMAT or document.get("format_version") != 1:
                raise SealError("it is not a version 1 plaintext inferflux policy file")
            return Policy.model_validate(document["policy"])
        except (ValueError, KeyError, AttributeError, ValidationError):
            raise SealError("it is not a valid plaintext inferflux policy file") from None


class EncryptedFileOptions(PluginOptions):
    """``policy.options`` of ``encrypted_file``."""

    path: str = Field(
        description="the policy file; created (mode 0600) if missing; its directory must exist"
    )
    allow_plaintext: bool = Field(
        False,
        description="without `INFERFLUX_POLICY_PASSPHRASE`, keep the file as plain JSON and log "
        "a warning instead of refusing to start",
    )
    lock_timeout: float = Field(
        10.0, gt=0, description="seconds a write waits for another process's"
    )


class EncryptedFilePolicyStore(PolicyStore):
    """The policy in one sealed file; see the module docstring."""

    options_model = EncryptedFileOptions

    persistent = True

    def __init__(
        self, *, path: str, allow_plaintext: bool = False, lock_timeout: float = 10.0, **rest: Any
    ) -> None:
        if rest:
            raise TypeError(f"unknown option(s) for encrypted_file: {', '.join(sorted(rest))}")
        super().__init__(path=path, allow_plaintext=allow_plaintext, lock_timeout=lock_timeout)
        self.path = Path(path).expanduser().absolute()
        self._codec = self._choose_codec(allow_plaintext)
        self._lock = threading.RLock()
        self._file_lock = FileLock(
            str(self.path) + ".lock", timeout=lock_timeout, mode=0o600, thread_local=False
        )
        self._policy = Policy()
        self._signature: tuple[int, ...] | None = None
        self._digest = b""
        self._seen = SeenFile(self.path)
        self._refresh: asyncio.Future[Policy] | None = None
        if not self.path.parent.is_dir():
            raise PolicyStoreError(f"the policy file's directory {self.path.parent} does not exist")
        with self._exclusive():
            if self.path.exists():
                self._load()
            else:
                self._seen.check_missing()
                self._write(Policy(version=1))
                log.info("created the policy file %s", self.path)

    def read(self) -> Policy:
        """The policy, reopened if another process replaced the file."""
        if self._stat() != self._signature:
            with self._lock:
                if self._stat() != self._signature:
                    self._load()
        return self._policy

    async def read_async(self) -> Policy:
        """The policy at once while the file is unchanged; otherwise reopened in a worker
        thread (one reload shared by every request waiting for it)."""
        if self._stat() == self._signature:
            return self._policy
        loop = asyncio.get_running_loop()
        refresh = self._refresh
        if refresh is None or refresh.done() or refresh.get_loop() is not loop:
            refresh = self._refresh = asyncio.ensure_future(asyncio.to_thread(self.read))
        return await asyncio.shield(refresh)

    def update(self, change: Callable[[Policy], Policy]) -> Policy:
        """Read the latest file under the lock, apply ``change``, write it back atomically."""
        with self._exclusive():
            if self._stat() != self._signature:
                self._load()
            changed = change(self._policy)
            self._write(changed.model_copy(update={"version": self._policy.version + 1}))
            return self._policy

    def _choose_codec(self, allow_plaintext: bool) -> Codec:
        passphrase = os.environ.get(PASSPHRASE_ENV)
        if passphrase:
            return SealedCodec(passphrase.encode())
        if not allow_plaintext:
            raise PolicyStoreError(
                f"policy.store is encrypted_file but {PASSPHRASE_ENV} is not set: set it to the "
                f"passphrase of {self.path} (or, to keep the policy unencrypted, set "
                "policy.options.allow_plaintext: true)"
            )
        log.warning(
            "%s is not set: the policy file %s is kept UNENCRYPTED (policy.options."
            "allow_plaintext)",
            PASSPHRASE_ENV,
            self.path,
        )
        return PlainCodec()

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        with self._lock:
            try:
                self._file_lock.acquire()
            except Timeout:
                raise PolicyStoreError(
                    f"another process has held the lock on {self.path} for too long"
                ) from None
            try:
                yield
            finally:
                self._file_lock.release()

    def _stat(self) -> tuple[int, ...]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise PolicyStoreError(f"the policy file {self.path} has disappeared") from None
        return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def _load(self) -> None:
        try:
            with open(self.path, "rb") as handle:
                st = os.fstat(handle.fileno())
                data = handle.read()
        except OSError as exc:
            raise PolicyStoreError(f"cannot read the policy file {self.path}: {exc}") from None
        try:
            policy = self._codec.decode(data)
        except SealError as exc:
            raise PolicyStoreError(f"refusing the policy file {self.path}: {exc}") from None
        self._check_not_rolled_back(policy, data)
        self._remember(policy, data, (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))

    def _check_not_rolled_back(self, policy: Policy, data: bytes) -> None:
        seen = self._policy.version
        digest = hashlib.sha256(data).digest()
        if policy.version < seen or (policy.version == seen and digest != self._digest and seen):
            raise PolicyStoreError(
                f"refusing the policy file {self.path}: it holds version {policy.version} but "
                f"version {seen} was already in use; an older copy was put in its place"
            )
        self._seen.check(Seen.of(policy.version, data))

    def _write(self, policy: Policy) -> None:
        data = self._codec.encode(policy)
        try:
            atomic_write(self.path, data)
            st = os.stat(self.path)
        except OSError as exc:
            raise PolicyStoreError(f"cannot write the policy file {self.path}: {exc}") from None
        self._remember(policy, data, (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))

    def _remember(self, policy: Policy, data: bytes, signature: tuple[int, ...]) -> None:
        self._seen.raise_to(Seen.of(policy.version, data))
        self._policy = policy
        self._digest = hashlib.sha256(data).digest()
        self._signature = signature


@hookimpl
def register_policy_stores() -> dict[str, type[PolicyStore]]:
    """The sealed file store, as ``encrypted_file``."""
    return {"encrypted_file": EncryptedFilePolicyStore}


@hookimpl
def self_check() -> list[str]:
    """The crypto this store needs: AES-256-GCM from ``cryptography``, and ``hashlib.scrypt``."""
    problems = []
    if not hasattr(hashlib, "scrypt"):
        problems.append("hashlib.scrypt is missing: Python must be built with OpenSSL 1.1+")
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        cipher, nonce = AESGCM(bytes(32)), bytes(12)
        if cipher.decrypt(nonce, cipher.encrypt(nonce, b"check", None), None) != b"check":
            problems.append("cryptography's AES-256-GCM does not round-trip")
    except Exception as exc:
        problems.append(f"cryptography's AES-256-GCM is unusable: {type(exc).__name__}: {exc}")
    return problems
