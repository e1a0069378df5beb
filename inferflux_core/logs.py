"""Log output: the text format (the default) or JSON, one object per line.

A JSON line holds ``time`` (ISO 8601, UTC), ``level``, ``logger`` and ``message``; the
``request_id`` of the HTTP request the line was logged for (see
:mod:`inferflux_core.request_context`: every line logged in the request's task, uvicorn's
access line included); the request's ``trace_id`` when it has a trace context; ``exc_info``
(the formatted traceback) when the line carries an exception; uvicorn's access lines add
``client``, ``method``, ``path``, ``http_version`` and ``status``; and any ``extra=`` fields
the caller passed.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any, Literal

from uvicorn.config import LOGGING_CONFIG

from inferflux_core import request_context

LogFormat = Literal["text", "json"]

__all__ = ["JsonFormatter", "LogFormat", "configure_logging", "uvicorn_log_config"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: What every LogRecord has: not copied into a JSON line as an extra field.
_RECORD_FIELDS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "color_message"}  # uvicorn's message with terminal colours
)
_ACCESS_FIELDS = ("client", "method", "path", "http_version", "status")


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object on one line (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line."""
        entry: dict[str, Any] = {
            "time": _utc_iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or request_context.request_id()
        if request_id is not None:
            entry["request_id"] = request_id
        trace_id = getattr(record, "trace_id", None) or request_context.current_trace_id()
        if trace_id is not None:
            entry["trace_id"] = trace_id
        args = record.args
        if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
            entry.update(zip(_ACCESS_FIELDS, args, strict=True))
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def _utc_iso(created: float) -> str:
    moment = datetime.fromtimestamp(created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def configure_logging(log_format: LogFormat, level: str, *, stream: IO[str] | None = None) -> None:
    """Set up the root logger: ``level`` (a name such as ``info``), lines to ``stream``
    (stderr by default) in ``log_format``. The text format leaves handlers an embedding
    program installed alone (``logging.basicConfig``); JSON replaces them, and routes
    Python's warnings through logging."""
    if log_format == "text":
        logging.basicConfig(level=level.upper(), format=TEXT_FORMAT, stream=stream)
        return
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    logging.captureWarnings(True)  # a warnings.warn line is a JSON line too


def uvicorn_log_config(log_format: LogFormat) -> dict[str, Any]:
    """uvicorn's ``log_config`` for ``log_format``: uvicorn's own for text; for JSON, its
    loggers hand every line (access lines too) to the root logger's JSON handler."""
    if log_format == "text":
        return LOGGING_CONFIG
    names = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
    loggers = {name: {"handlers": [], "propagate": True} for name in names}
    return {"version": 1, "disable_existing_loggers": False, "loggers": loggers}
