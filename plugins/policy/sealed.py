"""The sealed policy file: AES-256-GCM under a key derived from a passphrase with scrypt.

Layout (big-endian), all of the header authenticated as GCM's associated data::

    magic          8 bytes  b"IFXPOLCY"
    format         u16      1
    kdf            u8       1 = scrypt
    log2 N, r, p   3 x u8   scrypt cost (default N=2^17, r=8, p=1: OWASP's recommendation)
    salt           16 bytes random, per file (kept across writes, so the key is derived once)
    policy version u64      rises by one per write; a smaller one than already seen = rollback
    nonce          12 bytes random, new for every write
    ciphertext + 16-byte tag (the policy as JSON, which repeats the version)

The KDF parameters are checked against fixed caps *before* scrypt runs, so a tampered header
cannot make the server allocate gigabytes; any other change to header or body fails the tag.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import ValidationError

from inferflux_core.contracts import Policy

MAGIC = b"IFXPOLCY"
FORMAT_VERSION = 1
KDF_SCRYPT = 1
HEADER = struct.Struct(">8sHBBBB16sQ12s")
SALT_BYTES = 16
NONCE_BYTES = 12
TAG_BYTES = 16
KEY_BYTES = 32
MAX_KDF_MEMORY = 256 * 1024 * 1024
#: File keys kept (one per salt): files rewritten with new salts cannot grow the cache.
MAX_CACHED_KEYS = 4


class SealError(Exception):
    """The file cannot be opened: its message says why, for the operator."""


@dataclass(frozen=True, slots=True)
class KdfParams:
    """scrypt's cost parameters."""

    log2_n: int
    r: int
    p: int

    @property
    def memory(self) -> int:
        """Bytes scrypt needs (OpenSSL's accounting: 128·r·(N + p + 2))."""
        return 128 * self.r * ((1 << self.log2_n) + self.p + 2)

    def check(self) -> None:
        """SealError if the parameters are outside what this reader will run."""
        if not (10 <= self.log2_n <= 18 and 1 <= self.r <= 16 and 1 <= self.p <= 4) or (
            self.memory > MAX_KDF_MEMORY
        ):
            raise SealError(
                f"its header asks for scrypt N=2^{self.log2_n}, r={self.r}, p={self.p}, beyond "
                f"the limits (N <= 2^18, r <= 16, p <= 4, {MAX_KDF_MEMORY >> 20} MiB): the "
                "header is damaged or was tampered with"
            )

    def derive(self, passphrase: bytes, salt: bytes) -> bytes:
        """The 256-bit file key (checks the caps first)."""
        self.check()
        return hashlib.scrypt(
            passphrase,
            salt=salt,
            n=1 << self.log2_n,
            r=self.r,
            p=self.p,
            maxmem=self.memory + (1 << 20),
            dklen=KEY_BYTES,
        )


#: What new files are sealed with (OWASP's scrypt recommendation: 128 MiB, ~0.3 s).
DEFAULT_KDF = KdfParams(log2_n=17, r=8, p=1)


@dataclass(frozen=True, slots=True)
class SealedHeader:
    """A parsed header."""

    params: KdfParams
    salt: bytes
    policy_version: int
    nonce: bytes


def is_sealed(data: bytes) -> bool:
    """Whether ``data`` starts like a sealed policy file."""
    return data.startswith(MAGIC)


def read_header(data: bytes) -> SealedHeader:
    """Parse and check the header; SealError for a short, foreign or unknown file."""
    if not is_sealed(data):
        raise SealError("it is not a sealed inferflux policy file")
    if len(data) < HEADER.size + TAG_BYTES:
        raise SealError("it is truncated")
    _, version, kdf, log2_n, r, p, salt, policy_version, nonce = HEADER.unpack_from(data)
    if version != FORMAT_VERSION:
        raise SealError(
            f"its format version is {version}; this inferflux reads version {FORMAT_VERSION}"
        )
    if kdf != KDF_SCRYPT:
        raise SealError(f"it names an unknown key derivation ({kdf})")
    params = KdfParams(log2_n, r, p)
    params.check()
    return SealedHeader(params, salt, policy_version, nonce)


class SealedCodec:
    """Seals and opens policy files with one passphrase; derives each file key once."""

    def __init__(self, passphrase: bytes) -> None:
        self._passphrase = passphrase
        self._keys: dict[tuple[bytes, KdfParams], bytes] = {}
        self._salt: bytes | None = None
        self._params: KdfParams | None = None

    def decode(self, data: bytes) -> Policy:
        """The policy sealed in ``data``; SealError if it cannot be trusted."""
        header = read_header(data)
        key = self._key(header.salt, header.params)
        try:
            payload = AESGCM(key).decrypt(header.nonce, data[HEADER.size :], data[: HEADER.size])
        except InvalidTag:
            raise SealError(
                "it does not decrypt: the passphrase is wrong, or the file was modified"
            ) from None
        try:
            policy = Policy.from_json(payload)
        except ValidationError as exc:
            raise SealError(
                f"its content is not a valid policy: {exc.errors()[0]['msg']}"
            ) from None
        if policy.version != header.policy_version:
            raise SealError("its header and content disagree on the version")
        self._salt, self._params = header.salt, header.params
        return policy

    def encode(self, policy: Policy) -> bytes:
        """``policy`` sealed with a fresh nonce (and a fresh salt if the cost changed)."""
        if self._salt is None or self._params != DEFAULT_KDF:
            self._salt, self._params = os.urandom(SALT_BYTES), DEFAULT_KDF
        params = self._params
        nonce = os.urandom(NONCE_BYTES)
        header = HEADER.pack(
            MAGIC,
            FORMAT_VERSION,
            KDF_SCRYPT,
            params.log2_n,
            params.r,
            params.p,
            self._salt,
            policy.version,
            nonce,
        )
        key = self._key(self._salt, params)
        return header + AESGCM(key).encrypt(nonce, policy.to_json(), header)

    def _key(self, salt: bytes, params: KdfParams) -> bytes:
        cached = self._keys.get((salt, params))
        if cached is None:
            cached = params.derive(self._passphrase, salt)
            while len(self._keys) >= MAX_CACHED_KEYS:
                del self._keys[next(iter(self._keys))]
            self._keys[(salt, params)] = cached
        return cached
