"""llama.cpp's own output, sent to Python ``logging`` bounded: never raw to stderr.

llama.cpp reports through two channels. Its log callback (``llama_log_set``) gets most
messages; :class:`LogForwarder` turns each into a record of the
``inferflux_plugins.backends.llama_cpp.native`` logger, cut to :data:`MAX_MESSAGE_CHARS` and
at most :data:`MAX_LINES_PER_SECOND` a second (a later record says how many were dropped).
The grammar parser, though, writes a rejected grammar to the stderr file descriptor in full
(one client schema made 40,000 lines): :func:`captured_stderr` points descriptor 2 at a
temporary file while a grammar is parsed and forwards what landed there the same bounded way.
Another thread's stderr output in that window (milliseconds) is forwarded with it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

log = logging.getLogger("inferflux_plugins.backends.llama_cpp.native")

#: Longest message a record holds; the rest is replaced by a note of its length.
MAX_MESSAGE_CHARS = 500
#: Most records a second (a burst may use a second's worth at once).
MAX_LINES_PER_SECOND = 20
#: Most lines of one captured stderr burst that become records; the rest are counted.
MAX_CAPTURED_LINES = 3
#: Most bytes of a captured burst that are read back at all.
MAX_CAPTURED_BYTES = 64 * 1024

_capture_lock = threading.Lock()


def truncated(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``message`` cut to ``limit`` characters, with a note of how much was cut."""
    if len(message) <= limit:
        return message
    return f"{message[:limit]}… ({len(message) - limit} more characters)"


@dataclass
class LogForwarder:
    """Writes llama.cpp's messages to :data:`log`, truncated and rate limited (thread-safe)."""

    per_second: int = MAX_LINES_PER_SECOND
    logger: logging.Logger = log
    suppressed: int = 0
    _tokens: float = field(default=0.0, repr=False)
    _refilled: float = field(default_factory=time.monotonic, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _local: threading.local = field(default_factory=threading.local, repr=False)

    def __post_init__(self) -> None:
        self._tokens = float(self.per_second)

    def emit(self, level: int, message: str) -> None:
        """Log ``message`` at ``level`` unless this second's allowance is spent."""
        if not message or not self.logger.isEnabledFor(level):
            return
        deferred = getattr(self._local, "deferred", None)
        if deferred is not None:
            deferred.append((level, message))
            return
        with self._lock:
            now = time.monotonic()
            self._tokens = min(
                float(self.per_second), self._tokens + (now - self._refilled) * self.per_second
            )
            self._refilled = now
            if self._tokens < 1:
                self.suppressed += 1
                return
            self._tokens -= 1
            dropped, self.suppressed = self.suppressed, 0
        if dropped:
            self.logger.warning("%d llama.cpp log lines were dropped (rate limit)", dropped)
        self.logger.log(level, "%s", truncated(message))

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Hold this thread's records until the block ends (while stderr is captured, a
        record written to it would be captured too)."""
        held: list[tuple[int, str]] = []
        self._local.deferred = held
        try:
            yield
        finally:
            self._local.deferred = None
            for level, message in held:
                self.emit(level, message)

    def emit_captured(self, text: str, total_bytes: int) -> None:
        """Forward a burst of captured stderr: its first lines, then a count of the rest."""
        lines = [line for line in text.splitlines() if line.strip()]
        for line in lines[:MAX_CAPTURED_LINES]:
            self.emit(logging.WARNING, line)
        hidden = len(lines) - MAX_CAPTURED_LINES
        if hidden > 0 or total_bytes > len(text.encode("utf-8", errors="replace")):
            self.emit(
                logging.WARNING,
                f"(llama.cpp wrote {total_bytes} bytes to stderr here; "
                f"{max(hidden, 0)} more lines not shown)",
            )


FORWARDER = LogForwarder()


@dataclass
class Captured:
    """What :func:`captured_stderr` read back: the start of the output and its full size."""

    text: str = ""
    total_bytes: int = 0


@contextlib.contextmanager
def captured_stderr(forwarder: LogForwarder = FORWARDER) -> Iterator[Captured]:
    """Descriptor 2 points at a temporary file inside the block; what was written there is
    forwarded to ``forwarder`` afterwards and left in the yielded :class:`Captured`.

    Where descriptor 2 cannot be redirected (closed, say), the block runs uncaptured.
    """
    captured = Captured()
    with _capture_lock, tempfile.TemporaryFile() as sink:
        with contextlib.suppress(AttributeError, ValueError, OSError):
            sys.stderr.flush()
        try:
            saved = os.dup(2)
        except OSError:
            yield captured
            return
        with forwarder.deferred():
            try:
                os.dup2(sink.fileno(), 2)
                yield captured
            finally:
                os.dup2(saved, 2)
                os.close(saved)
        captured.total_bytes = os.fstat(sink.fileno()).st_size
        sink.seek(0)
        captured.text = sink.read(MAX_CAPTURED_BYTES).decode("utf-8", errors="replace")
    if captured.total_bytes:
        forwarder.emit_captured(captured.text, captured.total_bytes)
