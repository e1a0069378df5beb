"""API keys: ``ifx-<key id>.<secret>``, generated here, stored only as a SHA-256 hash.

The key id (16 hex digits) names the record, so a key is checked with one lookup and one
constant-time comparison of hashes. The secret is 32 random bytes; a key therefore cannot be
guessed, and a plain SHA-256 of it (no salt, no slow hash) is as strong as its secret.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from inferflux_core.contracts import ApiKeyRecord

PREFIX = "ifx-"
KEY_PATTERN = re.compile(r"ifx-([0-9a-f]{16})\.([A-Za-z0-9_-]{43})")
#: Compared against when no record matches, so a miss costs what a hit costs.
_ABSENT_HASH = "sha256:" + "0" * 64


def generate_key() -> tuple[str, str]:
    """A new key and its id: ``("ifx-<id>.<secret>", "<id>")``."""
    key_id = secrets.token_hex(8)
    return f"{PREFIX}{key_id}.{secrets.token_urlsafe(32)}", key_id


def hash_key(key: str) -> str:
    """The stored form of a key: ``sha256:<hex>`` of the whole key."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def parse_key_id(key: str) -> str | None:
    """The key id of a well-formed key, else None."""
    match = KEY_PATTERN.fullmatch(key)
    return match.group(1) if match else None


def key_matches(key: str, record: ApiKeyRecord | None) -> bool:
    """Whether ``key`` is the one ``record`` was made for; always one constant-time compare."""
    expected = record.key_hash if record is not None else _ABSENT_HASH
    return hmac.compare_digest(hash_key(key).encode(), expected.encode()) and record is not None
