"""Token buckets per key: requests per minute and tokens (prompt + completion) per minute.

A request takes one token from the key's request bucket. The token bucket is charged after
generation with what the request really used, and may go into debt; a key in debt is refused
until the bucket refills above zero, so a burst cannot use more than the limit for long, and
no token count has to be guessed in advance. Limits are read per request, so a limit changed
through the admin API applies to the next request. Headers use OpenAI's names.
"""

from __future__ import annotations

import math
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

    def admit(self, key_id: str, limits: RateLimits, *, generates: bool) -> dict[str, str]:
        """Count one request; 429 (with ``Retry-After``) if the key is over a limit.

        ``generates`` says whether the request will use tokens (then a key whose token bucket
        is in debt is refused too). Returns the ``x-ratelimit-*`` headers.
        """
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
            headers = self._headers(requests, tokens)
            headers["Retry-After"] = str(max(1, math.ceil(wait)))
            headers["retry-after-ms"] = str(max(1, math.ceil(wait * 1000)))
            raise RateLimitError(
                f"rate limit reached for {kind} per minute; retry in {headers['Retry-After']} s",
                headers=headers,
            )
        if requests is not None:
            requests.level -= 1
        return self._headers(requests, tokens)

    def charge(self, key_id: str, limits: RateLimits, n_tokens: int) -> None:
        """Take the tokens a finished request used from the key's token bucket."""
        if n_tokens <= 0:
            return
        bucket = self._bucket(self._tokens, key_id, limits.tokens_per_minute, self._clock())
        if bucket is not None:
            bucket.level -= n_tokens

    def headers(self, key_id: str, limits: RateLimits) -> dict[str, str]:
        """The ``x-ratelimit-*`` headers as of now."""
        now = self._clock()
        return self._headers(
            self._bucket(self._requests, key_id, limits.requests_per_minute, now),
            self._bucket(self._tokens, key_id, limits.tokens_per_minute, now),
        )

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
