"""What the gateway retries on another upstream and what it never retries, against test
doubles on loopback (:class:`CountingUpstream`: fixed bytes per request, counted).

The acceptance of the gateway rests on real ``inferflux serve`` upstreams
(``tests/integration/test_gateway_failover.py``); these pin each rule alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

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
from inferflux_core.errors import UpstreamRequestError, UpstreamUnavailableError
from inferflux_plugins.backends.openai_upstream import OpenAIUpstreamBackend
from tests.unit.test_openai_upstream_stream import CHUNK, MisbehavingUpstream, answer

DONE = (
    CHUNK
    + b'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}\n\n'
    + b"data: [DONE]\n\n"
)
OK = answer("200 OK", DONE, open_ended=True)
BROKEN = answer("200 OK", CHUNK + b"data: {oops\n\n", open_ended=True)


class CountingUpstream(MisbehavingUpstream):
    """Test double: answers each ``POST`` with fixed bytes (as :class:`MisbehavingUpstream`)
    and counts them; ``GET /models`` (the health check) always lists model ``m``."""

    MODELS = answer("200 OK", b'{"object": "list", "data": [{"id": "m"}]}')

    def __init__(self, response: bytes, *, hang: bool = False, models: bytes = b"") -> None:
        super().__init__(response, hang=hang)
        self.requests = 0
        self.models = models or self.MODELS

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"POST"):
                writer.write(self.models)
                await writer.drain()
            else:
                self.requests += 1
                writer.write(self.response)
                await writer.drain()
                if self.hang:
                    await asyncio.sleep(3600)
        writer.close()


@contextlib.asynccontextmanager
async def gateway(
    *upstreams: CountingUpstream, **options: Any
) -> AsyncIterator[OpenAIUpstreamBackend]:
    """The backend over ``upstreams`` (health checks slowed down out of the way)."""
    async with contextlib.AsyncExitStack() as stack:
        urls = [await stack.enter_async_context(u.running()) for u in upstreams]
        settings = {
            "upstreams": [{"base_url": url} for url in urls],
            "timeout_seconds": 2,
            "health_interval_seconds": 3600,
            **options,
        }
        backend = OpenAIUpstreamBackend(RequestBackendSpec("gw", "m", 2048, 8, options=settings))
        try:
            yield backend
        finally:
            await backend.close()


def request() -> InferenceRequest:
    """A one-message chat for model ``gw``."""
    return InferenceRequest("gw", messages=(ChatMessage("user", "hi"),))


async def events_of(backend: OpenAIUpstreamBackend) -> list[InferenceEvent]:
    """Every event of one request."""
    return [event async for event in backend.generate(request())]


def run(scenario: Any) -> Any:
    """Run a scenario coroutine, bounded."""
    return asyncio.run(asyncio.wait_for(scenario, 30))


def test_a_5xx_before_any_output_is_retried_on_the_other_upstream() -> None:
    failing, working = CountingUpstream(answer("502 Bad Gateway", b"no")), CountingUpstream(OK)

    async def scenario() -> tuple[list[InferenceEvent], dict[str, float]]:
        async with gateway(failing, working) as backend:
            return await events_of(backend), dict(backend.metrics())

    events, metrics = run(scenario())
    assert events[0] == TextDelta(0, "Hel") and events[1] == Finish(0, "stop")
    assert (failing.requests, working.requests) == (1, 1)
    assert metrics["num_retries_total"] == 1 and metrics["num_upstream_failures_total"] == 1


def test_a_4xx_is_the_clients_error_and_is_not_retried() -> None:
    body = b'{"error": {"message": "no such model", "code": "model_not_found"}}'
    refusing = CountingUpstream(answer("404 Not Found", body))
    working = CountingUpstream(OK)

    async def scenario() -> None:
        async with gateway(refusing, working) as backend:
            await events_of(backend)

    with pytest.raises(UpstreamRequestError) as caught:
        run(scenario())
    assert caught.value.status == 404 and caught.value.message == "no such model"
    assert (refusing.requests, working.requests) == (1, 0)


def test_a_stream_cut_after_output_ends_with_an_error_and_is_never_retried() -> None:
    cut, working = CountingUpstream(BROKEN), CountingUpstream(OK)

    async def scenario() -> tuple[list[InferenceEvent], dict[str, float]]:
        async with gateway(cut, working) as backend:
            return await events_of(backend), dict(backend.metrics())

    events, metrics = run(scenario())
    assert events[0] == TextDelta(0, "Hel")
    finish = events[1]
    assert isinstance(finish, Finish) and finish.reason == "error"
    assert isinstance(finish.error, UpstreamUnavailableError)
    assert isinstance(events[2], UsageReport)
    assert (cut.requests, working.requests) == (1, 0)
    assert metrics["num_requests_cut_mid_stream_total"] == 1


def test_an_upstream_silent_past_the_first_byte_timeout_is_left_for_another() -> None:
    silent = CountingUpstream(b"", hang=True)
    working = CountingUpstream(OK)

    async def scenario() -> list[InferenceEvent]:
        async with gateway(silent, working, first_byte_timeout_seconds=0.3) as backend:
            return await events_of(backend)

    events = run(scenario())
    assert events[0] == TextDelta(0, "Hel") and (silent.requests, working.requests) == (1, 1)


def test_an_open_breaker_sends_later_requests_straight_to_the_healthy_upstream() -> None:
    failing, working = CountingUpstream(answer("500 Oops", b"x")), CountingUpstream(OK)

    async def scenario() -> dict[str, float]:
        async with gateway(failing, working, breaker_failures=1) as backend:
            for _ in range(4):
                await events_of(backend)
            return dict(backend.metrics())

    metrics = run(scenario())
    assert (failing.requests, working.requests) == (1, 4)
    assert metrics["num_upstreams_open"] == 1 and metrics["upstream_0_breaker_open"] == 1
    assert metrics["num_retries_total"] == 1


def test_when_every_attempt_fails_the_last_error_is_a_503() -> None:
    first, second = (
        CountingUpstream(answer("503 Busy", b"")),
        CountingUpstream(answer("502 Bad", b"")),
    )

    async def scenario() -> None:
        async with gateway(first, second) as backend:
            await events_of(backend)

    with pytest.raises(UpstreamUnavailableError, match="HTTP 502"):
        run(scenario())
    assert (first.requests, second.requests) == (1, 1)


def test_max_attempts_bounds_the_tries() -> None:
    pool = [CountingUpstream(answer("500 Oops", b"")) for _ in range(3)]

    async def scenario() -> None:
        async with gateway(*pool, max_attempts=2) as backend:
            await events_of(backend)

    with pytest.raises(UpstreamUnavailableError):
        run(scenario())
    assert sorted(u.requests for u in pool) == [0, 1, 1]


def test_an_upstream_that_echoes_the_key_does_not_get_it_to_the_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = "sk-gateway-echo-secret-42"
    monkeypatch.setenv("GATEWAY_ECHO_KEY", secret)
    body = json.dumps({"error": {"message": f"key {secret} is not valid"}}).encode()
    echoing = CountingUpstream(answer("401 Unauthorized", body))
    streamed = b'data: {"error": {"message": "bad key ' + secret.encode() + b'"}}\n\n'
    echoing_mid_stream = CountingUpstream(answer("200 OK", CHUNK + streamed, open_ended=True))

    async def scenario(upstream: CountingUpstream) -> list[InferenceEvent]:
        async with gateway(upstream, api_key_env="GATEWAY_ECHO_KEY") as backend:
            return await events_of(backend)

    with pytest.raises(UpstreamRequestError) as caught:
        run(scenario(echoing))
    assert secret not in json.dumps(caught.value.to_body()) and "[redacted]" in str(
        caught.value.message
    )
    finish = run(scenario(echoing_mid_stream))[1]
    assert isinstance(finish, Finish) and finish.error is not None
    assert secret not in json.dumps(finish.error.to_body())


def test_a_health_check_that_finds_the_upstream_down_counts_against_its_breaker() -> None:
    down = CountingUpstream(OK, models=answer("503 Busy", b""))
    unlisted = CountingUpstream(
        answer("404 Not Found", b'{"error": {"message": "no model m"}}'),
        models=answer("200 OK", b'{"object": "list", "data": [{"id": "other"}]}'),
    )

    async def scenario() -> tuple[list[str], str | None]:
        async with gateway(down, unlisted, breaker_failures=2) as backend:
            for _ in range(3):
                await backend.health.check_all()
            states = [u.breaker.state for u in backend.balancer.upstreams]
            state = await backend.readiness()
            return states, state.reason

    states, reason = run(scenario())
    assert states == ["open", "closed"], "a model not listed is unready, not down"
    assert "upstream 1: the upstream does not list model 'm'" in str(reason)


def test_an_unready_upstream_still_answers_when_nothing_healthier_is_left() -> None:
    unlisted = CountingUpstream(
        answer("404 Not Found", b'{"error": {"message": "no model m"}}'),
        models=answer("200 OK", b'{"object": "list", "data": [{"id": "other"}]}'),
    )

    async def scenario() -> None:
        async with gateway(unlisted) as backend:
            for _ in range(4):
                await backend.health.check_all()
            await events_of(backend)

    with pytest.raises(UpstreamRequestError) as caught:
        run(scenario())
    assert caught.value.status == 404 and caught.value.message == "no model m"
