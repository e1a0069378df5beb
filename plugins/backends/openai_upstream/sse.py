"""Server-sent events from an untrusted upstream, read within bounds.

Only ``data:`` fields matter for OpenAI streams; comments (keep-alives), ``event:``, ``id:``
and ``retry:`` lines are skipped. A line or an event over its limit, or a stream over its
total, is a :class:`MalformedStreamError`, never an unbounded buffer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

#: Bytes in one line of the stream (a chunk with 20 top logprobs is a few KiB).
MAX_LINE_BYTES = 1 << 20
#: Bytes of ``data`` in one event.
MAX_EVENT_BYTES = 4 << 20
#: Bytes in one whole stream.
MAX_STREAM_BYTES = 1 << 30


class MalformedStreamError(Exception):
    """The upstream's stream is not server-sent events within the bounds."""


class EventReader:
    """Turns the bytes of a stream into the ``data`` of each event, in order."""

    def __init__(
        self,
        *,
        max_line_bytes: int = MAX_LINE_BYTES,
        max_event_bytes: int = MAX_EVENT_BYTES,
        max_stream_bytes: int = MAX_STREAM_BYTES,
    ) -> None:
        self._max_line = max_line_bytes
        self._max_event = max_event_bytes
        self._max_stream = max_stream_bytes
        self._buffer = bytearray()
        self._data: list[bytes] = []
        self._data_bytes = 0
        self._seen = 0

    def feed(self, chunk: bytes) -> list[str]:
        """The events ``chunk`` completes (their ``data``, lines joined by newlines)."""
        self._seen += len(chunk)
        if self._seen > self._max_stream:
            raise MalformedStreamError(f"the stream is longer than {self._max_stream} bytes")
        self._buffer += chunk
        events: list[str] = []
        start = 0
        while True:
            end = self._buffer.find(b"\n", start)
            if end < 0:
                break
            line = bytes(self._buffer[start:end])
            start = end + 1
            event = self._line(line[:-1] if line.endswith(b"\r") else line)
            if event is not None:
                events.append(event)
        del self._buffer[:start]
        if len(self._buffer) > self._max_line:
            raise MalformedStreamError(
                f"a line of the stream is longer than {self._max_line} bytes"
            )
        return events

    def close(self) -> list[str]:
        """The last event, when the stream ends without the blank line that ends it."""
        tail, self._buffer = bytes(self._buffer), bytearray()
        events = [] if not tail else self.feed(tail + b"\n")
        last = self._line(b"")
        return events + ([last] if last is not None else [])

    def _line(self, line: bytes) -> str | None:
        if len(line) > self._max_line:
            raise MalformedStreamError(
                f"a line of the stream is longer than {self._max_line} bytes"
            )
        if not line:
            return self._dispatch()
        if line.startswith(b":"):
            return None
        name, _, value = line.partition(b":")
        if name == b"data":
            value = value[1:] if value.startswith(b" ") else value
            self._data_bytes += len(value) + 1
            if self._data_bytes > self._max_event:
                raise MalformedStreamError(
                    f"an event of the stream is larger than {self._max_event} bytes"
                )
            self._data.append(value)
        return None

    def _long_line(self) -> MalformedStreamError:
        return MalformedStreamError(f"a line of the stream is longer than {self._max_line} bytes")

    def _dispatch(self) -> str | None:
        if not self._data:
            return None
        data, self._data, self._data_bytes = b"\n".join(self._data), [], 0
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedStreamError("an event of the stream is not UTF-8") from None


async def read_events(chunks: AsyncIterator[bytes], reader: EventReader) -> AsyncIterator[str]:
    """The ``data`` of every event in the byte stream ``chunks``."""
    async for chunk in chunks:
        for event in reader.feed(chunk):
            yield event
    for event in reader.close():
        yield event
