"""Token buckets per key: requests per minute and tokens (prompt + completion) per minute.

A request takes one token from the key's request bucket. A generating request then reserves
its worst case from the token bucket as soon as its prompt is tokenized (prompt tokens plus
``max_tokens`` for each of its ``n``/``best_of`` sequences), before it is queued: a
reservation that does not fit is refused with 429, so concurrent requests cannot together
spend more than the limit. When the request ends the reservation is settled with what it
really used and the unused part goes back. A request whose worst case exceeds the whole
per-minute limit runs only on a full bucket, alone, and leaves the bucket in debt; a key in
debt is refused until it refills above zero, so over time the limit holds. Limits are read
per request, so a limit changed through the admin API applies to the next request. Headers
use OpenAI's names.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from inferflux_core.contracts import RateLimits
from inferflux_core.errors import RateLimitError

#: Buckets kept before full ones (equal to no bucket at all) are dropped.
MAX_BUCKETS = 10_000


@dataclass(slots=True)
class TokenBucket:
    """``limit`` per minute, refilled continuously; ``level`` may go below zero (debt)."""

    limit: int
    level: float
    updated: float

    @property
    def per_second(self) -> float:
        """Refill rate."""
        return self.limit / 60.0

    def refill(self, now: float, limit: int) -> None:
        """Bring the level up to ``now``; a changed ``limit`` takes effect here."""
        if limit != self.limit:
            self.level = min(self.level, float(limit))
            self.limit = limit
        elapsed = max(0.0, now - self.updated)
        self.level = min(float(self.limit), self.level + elapsed * self.per_second)
        self.updated = now

    def seconds_until(self, level: float) -> float:
        """How long until the bucket holds ``level``."""
        return max(0.0, (level - self.level) / self.per_second)

    @property
    def full(self) -> bool:
        """Whether the bucket is at its limit."""
        return self.level >= self.limit


def format_reset(seconds: float) -> str:
    """OpenAI's duration format: ``20ms``, ``1s``, ``6m0s``."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    whole = math.ceil(seconds)
    minutes, secs = divmod(whole, 60)
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


class RateLimiter:
    """The buckets of every key, in memory (per server process)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._requests: dict[str, TokenBucket] = {}
        self._tokens: dict[str, TokenBucket] = {}
        # Reservations may come from worker threads (the serving layer tokenizes there).
        self._lock = threading.Lock()

    def admit(self, key_id: str, limits: RateLimits, *, generates: bool) -> dict[str, str]:
        """Count one request; 429 (with ``Retry-After``) if the key is over a limit.

        ``generates`` says whether the request will use tokens (then a key whose token bucket
        is in debt is refused too). Returns the ``x-ratelimit-*`` headers.
        """
        with self._lock:
            now = self._clock()
            requests = self._bucket(self._requests, key_id, limits.requests_per_minute, now)
            tokens = self._bucket(self._tokens, key_id, limits.tokens_per_minute, now)
            waits = {}
            if requests is not None and requests.level < 1:
                waits["requests"] = requests.seconds_until(1)
            if generates and tokens is not None and tokens.level <= 0:
                waits["tokens"] = tokens.seconds_until(1)
            if waits:
                kind, wait = max(waits.items(), key=lambda item: item[1])
                raise self._refusal(
                    f"rate limit reached for {kind} per minute;", wait, requests, tokens
                )
            if requests is not None:
                requests.level -= 1
            return self._headers(requests, tokens)

    def reserve(self, key_id: str, limits: RateLimits, n_tokens: int) -> None:
        """Set aside the most tokens a request can use, before it runs; 429 if they do not fit.

        A request larger than the whole limit needs a full bucket (and then runs alone).
        """
        if n_tokens <= 0:
            return
        with self._lock:
            now = self._clock()
            tokens = self._bucket(self._tokens, key_id, limits.tokens_per_minute, now)
            if tokens is None:
                return
            needed = min(n_tokens, tokens.limit)
            if tokens.level < needed:
                requests = self._bucket(self._requests, key_id, limits.requests_per_minute, now)
                if n_tokens > tokens.limit:
                    detail = (
                        f"this request may use up to {n_tokens} tokens (prompt + max_tokens for "
                        f"each choice), more than the limit of {tokens.limit} tokens per "
                        "minute, so it needs the whole budget: lower max_tokens, or"
                    )
                else:
                    detail = (
                        f"this request may use up to {n_tokens} tokens (prompt + max_tokens for "
                        f"each choice) and {max(0, math.floor(tokens.level))} are left:"
                    )
                raise self._refusal(
                    f"rate limit reached for tokens per minute; {detail}",
                    tokens.seconds_until(needed),
                    requests,
                    tokens,
                )
            tokens.level -= n_tokens

    def settle(self, key_id: str, limits: RateLimits, used: int, reserved: int = 0) -> None:
        """Replace a finished request's reservation with the tokens it used."""
        if used == reserved:
            return
        with self._lock:
            bucket = self._bucket(self._tokens, key_id, limits.tokens_per_minute, self._clock())
            if bucket is not None:
                bucket.level = min(float(bucket.limit), bucket.level + reserved - used)

    def headers(self, key_id: str, limits: RateLimits) -> dict[str, str]:
        """The ``x-ratelimit-*`` headers as of now."""
        with self._lock:
            now = self._clock()
            return self._headers(
                self._bucket(self._requests, key_id, limits.requests_per_minute, now),
                self._bucket(self._tokens, key_id, limits.tokens_per_minute, now),
            )

    def _refusal(
        self,
        message: str,
        wait: float,
        requests: TokenBucket | None,
        tokens: TokenBucket | None,
    ) -> RateLimitError:
        headers = self._headers(requests, tokens)
        headers["Retry-After"] = str(max(1, math.ceil(wait)))
        headers["retry-after-ms"] = str(max(1, math.ceil(wait * 1000)))
        return RateLimitError(f"{message} retry in {headers['Retry-After']} s", headers=headers)

    def _bucket(
        self, buckets: dict[str, TokenBucket], key_id: str, limit: int | None, now: float
    ) -> TokenBucket | None:
        if limit is None:
            return None
        bucket = buckets.get(key_id)
        if bucket is None:
            if len(buckets) >= MAX_BUCKETS:
                self._drop_full(buckets, now)
            bucket = buckets[key_id] = TokenBucket(limit, float(limit), now)
        else:
            bucket.refill(now, limit)
        return bucket

    @staticmethod
    def _drop_full(buckets: dict[str, TokenBucket], now: float) -> None:
        for key_id, bucket in list(buckets.items()):
            bucket.refill(now, bucket.limit)
            if bucket.full:
                del buckets[key_id]

    @staticmethod
    def _headers(requests: TokenBucket | None, tokens: TokenBucket | None) -> dict[str, str]:
        headers: dict[str, str] = {}
        for name, bucket in (("requests", requests), ("tokens", tokens)):
            if bucket is None:
                continue
            headers[f"x-ratelimit-limit-{name}"] = str(bucket.limit)
            headers[f"x-ratelimit-remaining-{name}"] = str(max(0, math.floor(bucket.level)))
            headers[f"x-ratelimit-reset-{name}"] = format_reset(bucket.seconds_until(bucket.limit))
        return headers
