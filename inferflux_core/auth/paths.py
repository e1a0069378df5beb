"""Which paths are public, and refusing paths that could mean two things.

falcon routes ``//v1/models`` like ``/v1/models`` and the ASGI server decodes ``%2F`` into
``/`` before falcon sees the path. An allow-list compared against such a path could be
sidestepped (``/healthz/../v1/...``), so non-canonical paths are refused before anything
else, and the public list is compared exactly.
"""

from __future__ import annotations

import re

from inferflux_core.errors import InvalidRequestError

HEALTH_PATHS = frozenset({"/healthz", "/livez", "/readyz"})
METRICS_PATH = "/metrics"
PUBLIC_METHODS = frozenset({"GET", "HEAD"})

_SEGMENT_TRICKS = re.compile(r"//|/\.\.?(?:/|$)|\\")
_RAW_ENCODED_TRICKS = re.compile(rb"%(?:2f|5c|2e|00)", re.IGNORECASE)
_PRINTABLE_PATH = re.compile(r"/[\x21-\x7e]*")


def public_paths(metrics_public: bool) -> frozenset[str]:
    """The exact paths served without a credential."""
    return HEALTH_PATHS | {METRICS_PATH} if metrics_public else HEALTH_PATHS


def check_canonical(path: str, raw_path: bytes | None) -> None:
    """400 for a path with empty, ``.`` or ``..`` segments, backslashes, encoded ``/``, ``\\``,
    ``.`` or NUL, or characters outside printable ASCII."""
    if (
        not _PRINTABLE_PATH.fullmatch(path)
        or _SEGMENT_TRICKS.search(path)
        or (raw_path is not None and _RAW_ENCODED_TRICKS.search(raw_path))
    ):
        raise InvalidRequestError("the request path is not in canonical form", code="invalid_path")
