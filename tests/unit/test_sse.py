"""Server-sent events: every stream ends with ``[DONE]``, whatever went wrong in it."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from inferflux_core.api.sse import sse_stream
from inferflux_core.errors import ServiceUnavailableError


async def _events(chunks: AsyncIterator[dict[str, Any]]) -> list[bytes]:
    return [event.data for event in [e async for e in sse_stream(chunks)] if event.data]


def test_chunks_then_done() -> None:
    async def chunks() -> AsyncIterator[dict[str, Any]]:
        yield {"a": 1}
        yield {"b": 2}

    data = asyncio.run(_events(chunks()))
    assert [json.loads(d) for d in data[:-1]] == [{"a": 1}, {"b": 2}]
    assert data[-1] == b"[DONE]"


def test_an_error_of_ours_is_sent_in_openais_shape_then_done() -> None:
    async def chunks() -> AsyncIterator[dict[str, Any]]:
        yield {"a": 1}
        raise ServiceUnavailableError("the model failed", code="model_failed")

    data = asyncio.run(_events(chunks()))
    assert json.loads(data[1])["error"]["code"] == "model_failed"
    assert data[-1] == b"[DONE]"


def test_a_bug_mid_stream_is_a_server_error_event_then_done(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def chunks() -> AsyncIterator[dict[str, Any]]:
        yield {"a": 1}
        raise RuntimeError("boom")

    with caplog.at_level(logging.ERROR, logger="inferflux_core.api.sse"):
        data = asyncio.run(_events(chunks()))
    error = json.loads(data[1])["error"]
    assert (error["type"], error["message"]) == ("server_error", "internal server error")
    assert "boom" not in data[1].decode()
    assert data[-1] == b"[DONE]"
    assert any("boom" in (r.exc_text or "") for r in caplog.records)
