"""Model names and digests, checked before either touches a path.

A registry name becomes a folder name, so it is held to a strict allow-list rather than a
deny-list of known tricks: lower-case ASCII letters and digits, with ``.``, ``_`` and ``-``
inside (never first or last, never two dots in a row), at most :data:`MAX_NAME_LENGTH`
characters, and none of Windows' reserved device names. That leaves no room for ``..``,
absolute paths, path separators of any platform, NUL, drive letters, percent-encoding, or
full-width and other look-alike characters (Ollama CVE-2024-37032, CVE-2024-45436).
"""

from __future__ import annotations

import re

from inferflux_core.errors import InvalidRequestError

MAX_NAME_LENGTH = 64
_NAME = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?")
_SHA256 = re.compile(r"[0-9a-f]{64}")
#: Device names Windows refuses as a file name, with or without an extension.
_WINDOWS_RESERVED = frozenset(
    ["con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))]
)


def validate_model_name(name: str, *, param: str = "name") -> str:
    """``name`` if it is a valid registry name; else an
    :class:`~inferflux_core.errors.InvalidRequestError` (400) saying what is allowed."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise InvalidRequestError(
            f"invalid model name {_shown(name)}: use 1 to {MAX_NAME_LENGTH} lower-case letters, "
            "digits, '.', '_' and '-', starting and ending with a letter or digit, "
            "with no '..'",
            param=param,
        )
    if name.split(".", 1)[0] in _WINDOWS_RESERVED:
        raise InvalidRequestError(
            f"invalid model name {name!r}: {name.split('.', 1)[0]!r} is a reserved device name",
            param=param,
        )
    return name


def validate_sha256(digest: str, *, param: str = "sha256") -> str:
    """The lower-case hex SHA-256 ``digest`` names (``sha256:`` prefix allowed); else a 400."""
    text = digest.strip().lower() if isinstance(digest, str) else ""
    text = text.removeprefix("sha256:")
    if not _SHA256.fullmatch(text):
        raise InvalidRequestError(
            f"invalid sha256 digest {_shown(digest)}: expected 64 hexadecimal digits", param=param
        )
    return text


def derive_model_name(stem: str) -> str | None:
    """A valid registry name made from a file or package name (``SmolLM2-135M.Q4_1`` ->
    ``smollm2-135m.q4_1``), or None when nothing usable is left."""
    text = re.sub(r"[^a-z0-9._-]+", "-", stem.lower())
    text = re.sub(r"\.{2,}", ".", text)
    text = text[:MAX_NAME_LENGTH].strip("._-")
    try:
        return validate_model_name(text)
    except InvalidRequestError:
        return None


def _shown(value: object) -> str:
    """``value`` for an error message: repr, shortened, so hostile input stays printable."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
