"""Token buckets: requests and tokens per minute, debt, runtime changes, OpenAI's headers."""

from __future__ import annotations

import pytest

from inferflux_core.contracts import RateLimits
from inferflux_core.errors import RateLimitError
from inferflux_core.ratelimit import RateLimiter, format_reset


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_requests_per_minute_allow_a_burst_then_429_with_retry_after() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    limits = RateLimits(requests_per_minute=3)
    headers = [limiter.admit("k", limits, generates=True) for _ in range(3)]
    assert [h["x-ratelimit-remaining-requests"] for h in headers] == ["2", "1", "0"]
    assert headers[0]["x-ratelimit-limit-requests"] == "3"
    with pytest.raises(RateLimitError) as caught:
        limiter.admit("k", limits, generates=True)
    error = caught.value
    assert error.status == 429 and error.code == "rate_limit_exceeded"
    assert error.headers["Retry-After"] == "20"  # one request per 20 s
    assert error.headers["x-ratelimit-remaining-requests"] == "0"
    clock.now += 20
    limiter.admit("k", limits, generates=True)


def test_tokens_are_charged_after_the_request_and_debt_blocks_the_next() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    limits = RateLimits(tokens_per_minute=600)  # 10 per second
    limiter.admit("k", limits, generates=True)
    limiter.settle("k", limits, 1200)
    headers = limiter.headers("k", limits)
    assert headers["x-ratelimit-remaining-tokens"] == "0"
    with pytest.raises(RateLimitError) as caught:
        limiter.admit("k", limits, generates=True)
    assert caught.value.headers["Retry-After"] == "61"  # 600 tokens of debt + 1, at 10/s
    limiter.admit("k", limits, generates=False)  # reading models does not need tokens
    clock.now += 61
    limiter.admit("k", limits, generates=True)


def test_keys_have_separate_buckets_and_no_limit_means_no_headers() -> None:
    limiter = RateLimiter(Clock())
    one = RateLimits(requests_per_minute=1)
    limiter.admit("a", one, generates=True)
    limiter.admit("b", one, generates=True)
    assert limiter.admit("c", RateLimits(), generates=True) == {}


def test_a_changed_limit_applies_to_the_next_request() -> None:
    limiter = RateLimiter(Clock())
    limiter.admit("k", RateLimits(requests_per_minute=1), generates=True)
    with pytest.raises(RateLimitError):
        limiter.admit("k", RateLimits(requests_per_minute=1), generates=True)
    with pytest.raises(RateLimitError):  # raising the limit does not refill at once
        limiter.admit("k", RateLimits(requests_per_minute=100), generates=True)
    generous = RateLimiter(Clock())
    generous.admit("k", RateLimits(requests_per_minute=100), generates=True)
    headers = generous.admit("k", RateLimits(requests_per_minute=2), generates=True)
    assert headers["x-ratelimit-limit-requests"] == "2"
    assert headers["x-ratelimit-remaining-requests"] == "1"


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.02, "20ms"), (1.0, "1s"), (59.2, "1m0s"), (360, "6m0s"), (0, "0ms")]
)
def test_reset_durations_use_openais_format(seconds: float, text: str) -> None:
    assert format_reset(seconds) == text


def test_per_key_limits_fall_back_to_the_defaults() -> None:
    own = RateLimits(requests_per_minute=5)
    defaults = RateLimits(requests_per_minute=50, tokens_per_minute=1000)
    assert own.over(defaults) == RateLimits(requests_per_minute=5, tokens_per_minute=1000)


def test_a_reservation_that_does_not_fit_is_refused_and_the_unused_part_comes_back() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    limits = RateLimits(tokens_per_minute=60)  # 1 per second
    limiter.reserve("k", limits, 25)
    limiter.reserve("k", limits, 25)
    with pytest.raises(RateLimitError) as caught:
        limiter.reserve("k", limits, 25)
    error = caught.value
    assert error.status == 429 and error.code == "rate_limit_exceeded"
    assert "up to 25 tokens" in error.message and "10 are left" in error.message
    assert error.headers["Retry-After"] == "15"  # 10 left, 25 needed, 1 per second
    assert error.headers["x-ratelimit-remaining-tokens"] == "10"
    assert error.headers["x-ratelimit-limit-tokens"] == "60"
    limiter.settle("k", limits, used=5, reserved=25)  # the first request used 5 of 25
    assert limiter.headers("k", limits)["x-ratelimit-remaining-tokens"] == "30"
    limiter.reserve("k", limits, 25)


def test_a_request_larger_than_the_limit_runs_only_alone_on_a_full_bucket() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    limits = RateLimits(tokens_per_minute=60)
    limiter.reserve("k", limits, 100)  # the bucket is full: it may run, into debt
    with pytest.raises(RateLimitError) as caught:
        limiter.reserve("k", limits, 1)
    assert caught.value.headers["Retry-After"] == "41"
    limiter.settle("k", limits, used=100, reserved=100)
    clock.now += 80  # -40 + 80
    with pytest.raises(RateLimitError) as caught:
        limiter.reserve("k", limits, 100)  # 60 needed: 20 s more
    assert "more than the limit of 60" in caught.value.message
    assert caught.value.headers["Retry-After"] == "20"
    limiter.settle("k", limits, used=0)
    assert limiter.headers("k", limits)["x-ratelimit-remaining-tokens"] == "40"


def test_settling_never_fills_the_bucket_past_its_limit() -> None:
    limiter = RateLimiter(Clock())
    limits = RateLimits(tokens_per_minute=60)
    limiter.reserve("k", limits, 50)
    limiter.settle("k", limits, used=0, reserved=500)
    assert limiter.headers("k", limits)["x-ratelimit-remaining-tokens"] == "60"
    limiter.reserve("k", limits, 1)
    RateLimiter(Clock()).reserve("k", RateLimits(), 10**9)  # no token limit: nothing to refuse
