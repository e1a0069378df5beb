"""The gateway's balancer, circuit breaker and options, in isolation with a test clock.

No network: upstreams here are settings only, and time is :class:`ManualClock` (a test
double of ``time.monotonic``), so every transition is deterministic.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from inferflux_core.contracts import RequestBackendSpec
from inferflux_core.errors import ConfigError
from inferflux_plugins.backends.openai_upstream import OpenAIUpstreamBackend
from inferflux_plugins.backends.openai_upstream.balancer import (
    Balancer,
    NoUpstreamError,
    SlotTimeoutError,
    Upstream,
)
from inferflux_plugins.backends.openai_upstream.breaker import CircuitBreaker
from inferflux_plugins.backends.openai_upstream.health import pool_readiness
from inferflux_plugins.backends.openai_upstream.pool_config import UpstreamSettings


class ManualClock:
    """A test double of ``time.monotonic`` that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += seconds


def settings(index: int, max_concurrency: int = 8) -> UpstreamSettings:
    """An upstream's settings (never contacted)."""
    return UpstreamSettings(
        index, f"http://10.0.0.{index}:8000/v1", "m", {}, 60.0, 60.0, 60.0, max_concurrency
    )


def pool(
    size: int, clock: ManualClock, *, cap: int = 8, failures: int = 3, cooldown: float = 10.0
) -> Balancer:
    """A balancer over ``size`` upstreams with breakers on ``clock``."""
    upstreams = [
        Upstream(settings(i, cap), CircuitBreaker(failures, cooldown, clock)) for i in range(size)
    ]
    return Balancer(upstreams, clock)


# -- breaker ------------------------------------------------------------------------------


def test_consecutive_failures_open_the_breaker_and_a_success_resets_the_count() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(3, 10.0, clock)
    for _ in range(2):
        breaker.settle("failure", breaker.begin())
    breaker.settle("success", breaker.begin())
    assert breaker.consecutive_failures == 0 and breaker.state == "closed"
    for _ in range(3):
        breaker.settle("failure", breaker.begin())
    assert breaker.state == "open" and not breaker.allows()
    assert breaker.retry_after() == 10.0


def test_after_the_cooldown_one_probe_request_goes_and_its_success_closes() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(1, 10.0, clock)
    breaker.settle("failure", breaker.begin())
    clock.advance(9.9)
    assert breaker.state == "open" and not breaker.allows()
    clock.advance(0.1)
    assert breaker.state == "half_open" and breaker.allows()
    probe = breaker.begin()
    assert probe and not breaker.allows(), "only one probe at a time"
    breaker.settle("success", probe)
    assert breaker.state == "closed" and breaker.allows()


def test_a_failed_probe_reopens_for_another_cooldown() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(2, 5.0, clock)
    breaker.settle("failure", breaker.begin())
    breaker.settle("failure", breaker.begin())
    clock.advance(5.0)
    breaker.settle("failure", breaker.begin())  # the probe: one failure is enough
    assert breaker.state == "open" and breaker.retry_after() == 5.0


def test_a_probe_that_ends_neutral_lets_the_next_one_go() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(1, 1.0, clock)
    breaker.settle("failure", breaker.begin())
    clock.advance(1.0)
    breaker.settle("neutral", breaker.begin())  # the client left: no verdict
    assert breaker.state == "half_open" and breaker.allows()


def test_failed_health_checks_open_the_breaker_but_passed_ones_reset_nothing() -> None:
    breaker = CircuitBreaker(2, 3.0, ManualClock())
    breaker.settle("failure", breaker.begin())
    breaker.health_checked(True)
    assert breaker.consecutive_failures == 1, "/models answering says nothing of requests"
    breaker.health_checked(False)
    assert breaker.state == "open"


def test_a_health_check_is_the_probe_of_a_half_open_breaker() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(1, 3.0, clock)
    breaker.settle("failure", breaker.begin())
    breaker.health_checked(True)
    assert breaker.state == "open", "a health check does not cut the cooldown short"
    clock.advance(3.0)
    breaker.health_checked(False)
    assert breaker.state == "open" and breaker.retry_after() == 3.0
    clock.advance(3.0)
    breaker.health_checked(True)
    assert breaker.state == "closed"


# -- balancer -----------------------------------------------------------------------------


def test_the_least_outstanding_upstream_is_chosen_and_ties_go_round_robin() -> None:
    balancer = pool(3, ManualClock())
    held = [balancer.try_acquire(set()) for _ in range(3)]
    assert [lease.upstream.index for lease in held if lease] == [0, 1, 2]
    middle = held[1]
    assert middle is not None
    balancer.release(middle, "success")  # upstream 1 now has the fewest
    again = balancer.try_acquire(set())
    assert again is not None and again.upstream.index == 1
    for lease in (held[0], held[2], again):
        assert lease is not None
        balancer.release(lease, "success")
    order = []
    for _ in range(6):
        taken = balancer.try_acquire(set())
        assert taken is not None
        order.append(taken.upstream.index)
        balancer.release(taken, "success")
    assert order == [2, 0, 1, 2, 0, 1]


def test_tried_unhealthy_and_open_upstreams_are_passed_over() -> None:
    clock = ManualClock()
    balancer = pool(3, clock, failures=1)
    upstreams = balancer.upstreams
    upstreams[0].healthy = False
    lease = balancer.try_acquire({1})
    assert lease is not None and lease.upstream.index == 2
    balancer.release(lease, "failure")  # opens upstream 2's breaker
    assert upstreams[2].breaker.state == "open"
    lease = balancer.try_acquire(set())
    assert lease is not None and lease.upstream.index == 1
    balancer.release(lease, "success")
    # Only the unhealthy one is left: it is still tried rather than failing the request.
    lease = balancer.try_acquire({1})
    assert lease is not None and lease.upstream.index == 0


def test_no_upstream_left_fails_at_once_with_the_breakers_retry_after() -> None:
    clock = ManualClock()
    balancer = pool(2, clock, failures=1, cooldown=7.5)
    for index in (0, 1):
        lease = balancer.try_acquire({1 - index})
        assert lease is not None
        balancer.release(lease, "failure")
    with pytest.raises(NoUpstreamError) as caught:
        asyncio.run(balancer.acquire(set(), clock() + 60))
    assert caught.value.retry_after == 8.0


def test_a_full_pool_makes_a_request_wait_for_the_first_freed_slot() -> None:
    async def scenario() -> tuple[int, int]:
        balancer = pool(2, ManualClock(), cap=1)
        held = [balancer.try_acquire(set()), balancer.try_acquire(set())]
        assert all(held) and balancer.try_acquire(set()) is None
        waiting = asyncio.ensure_future(balancer.acquire(set(), balancer.clock() + 60))
        await asyncio.sleep(0)
        seen_waiting = balancer.waiting
        lease = held[1]
        assert lease is not None
        balancer.release(lease, "success")
        got = await asyncio.wait_for(waiting, 5)
        return seen_waiting, got.upstream.index

    assert asyncio.run(scenario()) == (1, 1)


def test_a_full_pool_past_the_wait_is_a_slot_timeout() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        balancer = pool(1, clock, cap=1)
        assert balancer.try_acquire(set()) is not None
        clock.advance(0)  # the wait ends at once: its instant has passed
        await balancer.acquire(set(), clock() - 1)

    with pytest.raises(SlotTimeoutError):
        asyncio.run(scenario())


def test_the_pool_is_ready_while_one_upstream_is_healthy_with_its_breaker_not_open() -> None:
    clock = ManualClock()
    balancer = pool(2, clock, failures=1)
    first, second = balancer.upstreams
    first.healthy, first.reason = False, "the upstream cannot be reached"
    second.healthy = True
    assert pool_readiness(balancer.upstreams).ready
    second.breaker.settle("failure", second.breaker.begin())
    state = pool_readiness(balancer.upstreams)
    assert not state.ready
    assert "upstream 0: the upstream cannot be reached" in str(state.reason)
    assert "upstream 1: circuit breaker open" in str(state.reason)


# -- options ------------------------------------------------------------------------------


def backend(options: dict[str, Any]) -> OpenAIUpstreamBackend:
    """The backend for model ``gw`` with ``options``."""
    return OpenAIUpstreamBackend(RequestBackendSpec("gw", "m", 2048, 8, options=options))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"upstreams": []}, "models.gw.options.upstreams: List should have at least 1 item"),
        (
            {"upstreams": [{"base_url": "http://a"}, {"base_url": "ftp://b"}]},
            "models.gw.options.upstreams.1.base_url: Value error, must be an http",
        ),
        (
            {"upstreams": [{"base_url": "http://a", "max_concurrency": 0}]},
            "models.gw.options.upstreams.0.max_concurrency",
        ),
        ({"upstreams": [{"base_url": "http://a", "key": "x"}]}, "upstreams.0.key: Extra inputs"),
        ({"base_url": "http://a", "upstreams": [{"base_url": "http://b"}]}, "not both"),
        (
            {"upstreams": [{"base_url": "http://a", "api_key_env": "E", "api_key_file": "/f"}]},
            "models.gw.options.upstreams.0: set one of api_key_env and api_key_file",
        ),
        (
            {"upstreams": [{"base_url": "http://a", "api_key_env": "INFERFLUX_TEST_UNSET"}]},
            "models.gw.options.upstreams.0.api_key_env: the environment variable",
        ),
        ({"base_url": "http://a", "api_key_file": "/no/such/key"}, "api_key_file: cannot read"),
    ],
)
def test_invalid_pool_options_name_their_full_key(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        backend(options)
    assert message in caught.value.message


def test_each_upstream_takes_its_own_key_and_settings_over_the_pools(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("sk-from-the-file-123\n")
    monkeypatch.setenv("GATEWAY_TEST_KEY", "sk-from-the-env-456")
    gateway = backend(
        {
            "upstreams": [
                {"base_url": "http://a:1", "api_key_file": str(key_file), "max_concurrency": 2},
                {"base_url": "http://b:2/v1/", "model": "other", "first_byte_timeout_seconds": 3},
                {"base_url": "http://c:3", "api_key_env": "GATEWAY_TEST_KEY"},
            ],
            "api_key_env": "GATEWAY_TEST_KEY",
            "timeout_seconds": 30,
            "connect_timeout_seconds": 2,
            "max_concurrent": 5,
        }
    )
    a, b, c = (u.settings for u in gateway.balancer.upstreams)
    assert a.headers["Authorization"] == "Bearer sk-from-the-file-123"
    assert b.headers["Authorization"] == c.headers["Authorization"] == "Bearer sk-from-the-env-456"
    assert (a.base_url, b.base_url) == ("http://a:1/v1", "http://b:2/v1")
    assert (a.model, b.model) == ("m", "other")
    assert (a.max_concurrency, b.max_concurrency) == (2, 5)
    assert (a.timeout, a.connect_timeout, a.first_byte_timeout) == (30, 2, 30)
    assert b.first_byte_timeout == 3
    shown = repr(gateway.balancer.upstreams) + repr(gateway.options)
    assert "sk-from" not in shown


def test_a_key_file_that_is_empty_is_refused_without_showing_anything(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("\n")
    with pytest.raises(ConfigError, match=r"api_key_file: .* is empty"):
        backend({"base_url": "http://a", "api_key_file": str(key_file)})
    key_file.write_text("sk-line-one\nsk-line-two\n")
    with pytest.raises(ConfigError) as caught:
        backend({"base_url": "http://a", "api_key_file": str(key_file)})
    assert "one line" in caught.value.message and "sk-line" not in caught.value.message


def test_the_metrics_report_the_pool() -> None:
    gateway = backend({"upstreams": [{"base_url": "http://a"}, {"base_url": "http://b"}]})
    first, second = gateway.balancer.upstreams
    first.healthy, second.healthy = True, False
    metrics = gateway.metrics()
    assert metrics["num_upstreams"] == 2 and metrics["num_upstreams_healthy"] == 1
    assert metrics["num_upstreams_open"] == 0 and metrics["num_retries_total"] == 0
    assert metrics["upstream_0_healthy"] == 1 and metrics["upstream_1_healthy"] == 0
