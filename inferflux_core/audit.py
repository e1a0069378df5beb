"""The audit log: one JSON line per request, through the logging stack.

A line holds the time, request id, key id (never the key), route, model, status, error code,
token counts and latency. Prompt and response are recorded as SHA-256 hex digests of their
UTF-8 text, or as text when ``audit.record_text`` is on. With ``audit.path`` the lines go to
that file (mode 0600, rotated at ``max_bytes`` keeping ``backups`` old files) and nowhere
else; without it they go to the ``inferflux.audit`` logger, for the application's logging
configuration to route.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import logging
import logging.handlers
import os
from datetime import UTC, datetime
from typing import Any, cast

from inferflux_core.config import AuditConfig

LOGGER_NAME = "inferflux.audit"
_instances = itertools.count()


class _PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A rotating file handler whose files are readable by their owner only."""

    def _open(self) -> io.TextIOWrapper:
        stream = open(  # noqa: SIM115 - the handler owns and closes the stream
            self.baseFilename,
            self.mode,
            encoding=self.encoding,
            errors=self.errors,
            opener=lambda path, flags: os.open(path, flags, 0o600),
        )
        return cast(io.TextIOWrapper, stream)  # a text mode, so open() made a TextIOWrapper


def sha256_text(text: str) -> str:
    """The hex SHA-256 of ``text`` as UTF-8."""
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()


def audit_record(
    entry: dict[str, Any], *, prompt: str | None, response: str | None, record_text: bool
) -> dict[str, Any]:
    """One request's audit record: the time, ``entry``, and the prompt and response hashed
    (and as text with ``record_text``). What the audit log writes and
    ``on_request_finished`` plugins receive."""
    record = {"time": datetime.now(UTC).isoformat(timespec="milliseconds"), **entry}
    for name, text in (("prompt", prompt), ("response", response)):
        if text is None:
            continue
        if record_text:
            record[name] = text
        record[f"{name}_sha256"] = sha256_text(text)
    return record


class AuditLog:
    """Writes audit lines; one per server (several may run in one process)."""

    def __init__(self, config: AuditConfig) -> None:
        self.config = config
        self.logger = logging.getLogger(f"{LOGGER_NAME}.{next(_instances)}")
        self.logger.setLevel(logging.INFO)
        self._handler: logging.Handler | None = None
        if config.path is not None:
            handler = _PrivateRotatingFileHandler(
                config.path, maxBytes=config.max_bytes, backupCount=config.backups, delay=False
            )
            handler.setFormatter(logging.Formatter("%(message)s"))
            self.logger.addHandler(handler)
            self.logger.propagate = False
            self._handler = handler

    def write(self, entry: dict[str, Any], *, prompt: str | None, response: str | None) -> None:
        """Log one request's line; ``prompt`` / ``response`` are hashed unless text is wanted."""
        line = audit_record(
            entry, prompt=prompt, response=response, record_text=self.config.record_text
        )
        self.write_record(line)

    def write_record(self, record: dict[str, Any]) -> None:
        """Log a record made by :func:`audit_record` as one JSON line."""
        self.logger.info(json.dumps(record, ensure_ascii=False, separators=(",", ":")))

    def close(self) -> None:
        """Flush and close the file."""
        if self._handler is not None:
            self.logger.removeHandler(self._handler)
            self._handler.close()
            self._handler = None
