"""``openai_upstream`` reads an untrusted upstream within bounds: a malformed or oversized
stream is a 503 naming the problem, never a 500, an unbounded buffer or a hang.

The byte-level tests drive the reader and decoder directly; the last ones put the backend in
front of :class:`MisbehavingUpstream`, a test double that answers every request on loopback
with fixed bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from inferflux_core.contracts import (
    ChatMessage,
    Finish,
    InferenceEvent,
    InferenceRequest,
    RequestBackendSpec,
    TextDelta,
    UsageReport,
)
from inferflux_core.errors import (
    ServiceUnavailableError,
    UpstreamRequestError,
    UpstreamUnavailableError,
)
from inferflux_plugins.backends.openai_upstream import OpenAIUpstreamBackend
from inferflux_plugins.backends.openai_upstream.chunks import MAX_TOOL_CALLS, ChunkDecoder
from inferflux_plugins.backends.openai_upstream.sse import EventReader, MalformedStreamError


def test_events_are_split_on_blank_lines_across_chunk_boundaries() -> None:
    reader = EventReader()
    assert reader.feed(b': keep-alive\n\ndata: {"a"') == []
    assert reader.feed(b": 1}\r\n\r\ndata: x\ndata: y\n") == ['{"a": 1}']
    assert reader.close() == ["x\ny"]


@pytest.mark.parametrize(
    ("chunks", "problem"),
    [
        ([b"data: " + b"x" * 200], "a line of the stream is longer than 100 bytes"),
        ([b"data: " + b"x" * 90 + b"\n"] * 3, "an event of the stream is larger than 200 bytes"),
        ([b": ping\n" * 100], "the stream is longer than 500 bytes"),
        ([b"data: \xff\xfe\n\n"], "not UTF-8"),
    ],
)
def test_a_stream_over_its_bounds_is_malformed(chunks: list[bytes], problem: str) -> None:
    reader = EventReader(max_line_bytes=100, max_event_bytes=200, max_stream_bytes=500)
    with pytest.raises(MalformedStreamError, match=problem):
        for chunk in chunks:
            reader.feed(chunk)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"choices": {}}', "choices is not a list"),
        ('{"choices": [{"index": 5, "delta": {}}]}', "choice index 5"),
        ('{"choices": [{"index": 0, "delta": {"content": 7}}]}', "not a string"),
        ('{"choices": [{"index": 0, "finish_reason": 3}]}', "finish_reason"),
        ('{"choices": [], "usage": {"prompt_tokens": -1}}', "not a token count"),
        ('{"choices": [{"index": 0, "delta": {"tool_calls": [{"index": "a"}]}}]}', "index"),
    ],
)
def test_a_chunk_that_breaks_the_protocol_is_malformed(data: str, problem: str) -> None:
    with pytest.raises(MalformedStreamError, match=problem):
        ChunkDecoder(n=1).decode(data)


def test_tool_calls_per_choice_are_bounded() -> None:
    decoder = ChunkDecoder(n=1)
    for index in range(MAX_TOOL_CALLS):
        call = f'{{"index": {index}, "id": "c{index}", "function": {{"name": "f"}}}}'
        decoder.decode(f'{{"choices": [{{"index": 0, "delta": {{"tool_calls": [{call}]}}}}]}}')
    with pytest.raises(MalformedStreamError, match="tool calls"):
        decoder.decode('{"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 999}]}}]}')


def test_nothing_may_follow_a_choices_finish_or_done() -> None:
    decoder = ChunkDecoder(n=1)
    decoder.decode('{"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}')
    with pytest.raises(MalformedStreamError, match="after its end"):
        decoder.decode('{"choices": [{"index": 0, "delta": {"content": "x"}}]}')
    decoder.decode("[DONE]")
    with pytest.raises(MalformedStreamError, match="after \\[DONE\\]"):
        decoder.decode("{}")


# -- the backend in front of a misbehaving upstream ---------------------------------------


class MisbehavingUpstream:
    """Test double: an HTTP server on loopback that answers any request with ``response``
    (then, with ``hang``, keeps the connection open without a word)."""

    def __init__(self, response: bytes, *, hang: bool = False) -> None:
        self.response = response
        self.hang = hang
        self.server: asyncio.Server | None = None

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(self.response)
            await writer.drain()
            if self.hang:
                await asyncio.sleep(3600)
        writer.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        """Serve while inside; yields the OpenAI base URL."""
        self.server = await asyncio.start_server(self._answer, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        try:
            yield f"http://127.0.0.1:{port}/v1"
        finally:
            self.server.close()


def answer(status: str, body: bytes, *, open_ended: bool = False, headers: str = "") -> bytes:
    """An HTTP/1.1 response; ``open_ended`` leaves the length open (a stream)."""
    length = "Connection: close" if open_ended else (f"Content-Length: {len(body)}")
    head = f"HTTP/1.1 {status}\r\nContent-Type: text/event-stream\r\n{headers}{length}\r\n\r\n"
    return head.encode() + body


def generate_against(upstream: MisbehavingUpstream, timeout: float = 2.0) -> list[InferenceEvent]:
    """Every event the backend yields for one chat request to ``upstream``."""

    async def main() -> list[InferenceEvent]:
        async with upstream.running() as base_url:
            options = {"base_url": base_url, "timeout_seconds": timeout}
            backend = OpenAIUpstreamBackend(RequestBackendSpec("gw", "m", 2048, 8, options=options))
            request = InferenceRequest("gw", messages=(ChatMessage("user", "hi"),))
            try:
                return [event async for event in backend.generate(request)]
            finally:
                await backend.close()

    return asyncio.run(asyncio.wait_for(main(), 30))


CHUNK = b'data: {"choices": [{"index": 0, "delta": {"content": "Hel"}}]}\n\n'


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"data: {oops\n\n", "not JSON"),
        (b"data: " + b"x" * (2 << 20), "a line of the stream is longer"),
        (b"data: [DONE]\n\n", "it ended before choice 0 finished"),
    ],
)
def test_a_malformed_stream_before_any_event_is_a_503(body: bytes, problem: str) -> None:
    with pytest.raises(UpstreamUnavailableError, match=problem) as caught:
        generate_against(MisbehavingUpstream(answer("200 OK", body, open_ended=True)))
    assert caught.value.status == 503 and caught.value.code == "upstream_unavailable"


def test_a_stream_broken_after_it_started_finishes_the_choice_with_an_error() -> None:
    events = generate_against(
        MisbehavingUpstream(answer("200 OK", CHUNK + b"data: {oops\n\n", open_ended=True))
    )
    assert events[0] == TextDelta(0, "Hel")
    finish = events[1]
    assert isinstance(finish, Finish) and finish.reason == "error"
    assert isinstance(finish.error, UpstreamUnavailableError)
    assert "malformed" in finish.error.message
    assert isinstance(events[2], UsageReport) and len(events) == 3


def test_an_upstream_that_stops_talking_times_out_as_a_503() -> None:
    upstream = MisbehavingUpstream(answer("200 OK", CHUNK, open_ended=True), hang=True)
    events = generate_against(upstream, timeout=0.5)
    finish = events[1]
    assert isinstance(finish, Finish) and isinstance(finish.error, UpstreamUnavailableError)
    assert "did not answer in time" in finish.error.message


def test_a_5xx_is_a_503_and_a_429_keeps_retry_after() -> None:
    with pytest.raises(UpstreamUnavailableError, match="HTTP 502"):
        generate_against(MisbehavingUpstream(answer("502 Bad Gateway", b"<html>internal</html>")))
    body = b'{"error": {"message": "slow down", "type": "rate_limit_error", "code": "rate"}}'
    limited = answer("429 Too Many Requests", body, headers="Retry-After: 7\r\n")
    with pytest.raises(UpstreamRequestError) as caught:
        generate_against(MisbehavingUpstream(limited))
    error = caught.value
    assert (error.status, error.message, error.code) == (429, "slow down", "rate")
    assert error.headers == {"Retry-After": "7"} and error.error_type == "rate_limit_error"


def test_lone_surrogates_become_replacement_characters_and_bools_are_not_indexes() -> None:
    decoder = ChunkDecoder(n=2)
    (delta,) = decoder.decode('{"choices": [{"index": 0, "delta": {"content": "a\\ud800b"}}]}')
    assert delta == TextDelta(0, "a\ufffd\ufffd\ufffdb") and delta.text.encode()
    with pytest.raises(MalformedStreamError, match="choice index True"):
        decoder.decode('{"choices": [{"index": true, "delta": {"content": "x"}}]}')


def test_a_request_waiting_past_max_concurrent_gets_a_503_queue_timeout() -> None:
    upstream = MisbehavingUpstream(answer("200 OK", CHUNK, open_ended=True), hang=True)

    async def main() -> tuple[InferenceEvent, Exception]:
        async with upstream.running() as base_url:
            options = {"base_url": base_url, "timeout_seconds": 0.5, "max_concurrent": 1}
            backend = OpenAIUpstreamBackend(RequestBackendSpec("gw", "m", 2048, 8, options=options))
            first = backend.generate(InferenceRequest("gw", messages=(ChatMessage("user", "a"),)))
            second = backend.generate(InferenceRequest("gw", messages=(ChatMessage("user", "b"),)))
            try:
                event = await anext(first)
                metrics = backend.metrics()
                assert (metrics["num_requests_running"], metrics["num_requests_waiting"]) == (1, 0)
                with pytest.raises(Exception) as caught:
                    await anext(second)
                return event, caught.value
            finally:
                await first.aclose()  # type: ignore[attr-defined]
                await backend.close()

    event, error = asyncio.run(asyncio.wait_for(main(), 30))
    assert event == TextDelta(0, "Hel")
    assert isinstance(error, ServiceUnavailableError) and error.code == "queue_timeout"
    assert error.headers == {"Retry-After": "1"}
