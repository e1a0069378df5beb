"""The options an ``openai_upstream`` model accepts under ``models[].options``.

Either one upstream (``base_url``, the shorthand for a pool of one) or a pool
(``upstreams: [...]``); pool-level values (key, timeouts, concurrency, headers) are the
defaults of every upstream that does not set its own.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}")
#: Headers the backend sets itself: the credential comes from ``api_key`` / ``api_key_env``.
_RESERVED_HEADERS = {"authorization", "content-type", "accept", "host", "content-length"}
#: Upstreams in one pool.
MAX_UPSTREAMS = 32

_Seconds = Field(None, gt=0, le=3600)


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not hold credentials: use api_key_env or api_key_file")
    if parts.query or parts.fragment:
        raise ValueError("must not have a query or a fragment")
    path = parts.path.rstrip("/") or "/v1"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def _plain_headers(headers: dict[str, str]) -> dict[str, str]:
    for name, value in headers.items():
        if not _HEADER_NAME.fullmatch(name):
            raise ValueError(f"{name[:64]!r} is not a header name")
        if name.lower() in _RESERVED_HEADERS:
            raise ValueError(f"{name!r} is set by the backend (use api_key for credentials)")
        if any(c in value for c in "\r\n\0") or len(value) > 8192:
            raise ValueError(f"the value of {name!r} must be one line of at most 8192 chars")
    return headers


class UpstreamOptions(BaseModel):
    """One upstream of a pool (``upstreams[i]``); unset values come from the pool's level."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The upstream's OpenAI base URL (``http://host:8000/v1``); no path gets ``/v1``.
    base_url: str = Field(min_length=1, max_length=2048)
    #: The model name this upstream serves; default: the pool's ``upstream_model``.
    model: str | None = Field(None, min_length=1, max_length=256)
    #: An environment variable holding this upstream's API key (read at startup).
    api_key_env: str | None = Field(None, min_length=1, max_length=256)
    #: A file holding this upstream's API key (read at startup; one line).
    api_key_file: Path | None = None
    #: Seconds at most between two chunks of a stream.
    timeout_seconds: float | None = _Seconds
    #: Seconds to connect.
    connect_timeout_seconds: float | None = _Seconds
    #: Seconds from sending the request to the first event of the answer.
    first_byte_timeout_seconds: float | None = _Seconds
    #: Requests in flight to this upstream at once.
    max_concurrency: int | None = Field(None, ge=1, le=4096)
    #: Extra headers for this upstream, over the pool's ``headers``.
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("base_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        return _http_url(value)

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        return _plain_headers(headers)


class OpenAIUpstreamOptions(BaseModel):
    """Where the upstreams are and how to call them; unknown keys are an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: One upstream's OpenAI base URL, as the OpenAI SDK takes it (``http://host:8000/v1``);
    #: a URL with no path gets ``/v1``. Shorthand for ``upstreams: [{base_url: ...}]``.
    base_url: str | None = Field(None, min_length=1, max_length=2048)
    #: The pool of upstreams serving this model (instead of ``base_url``).
    upstreams: list[UpstreamOptions] | None = Field(None, min_length=1, max_length=MAX_UPSTREAMS)
    #: The model name the upstreams serve; default: the model's ``source``.
    upstream_model: str | None = Field(None, min_length=1, max_length=256)
    #: The API key, sent as ``Authorization: Bearer`` (prefer ``api_key_env`` /
    #: ``api_key_file``: a key in a config file is easy to leak).
    api_key: SecretStr | None = None
    #: An environment variable holding the API key (read at startup).
    api_key_env: str | None = Field(None, min_length=1, max_length=256)
    #: A file holding the API key (read at startup; one line).
    api_key_file: Path | None = None
    #: Seconds at most between two chunks of a stream (and to connect, unless
    #: ``connect_timeout_seconds`` says otherwise).
    timeout_seconds: float = Field(60.0, gt=0, le=3600)
    #: Seconds to connect; default: ``timeout_seconds``.
    connect_timeout_seconds: float | None = _Seconds
    #: Seconds from sending a request to the first event of the answer; past it the
    #: request is retried on another upstream. Default: ``timeout_seconds``.
    first_byte_timeout_seconds: float | None = _Seconds
    #: Requests in flight to each upstream at once (``max_concurrency`` of an upstream).
    max_concurrent: int = Field(64, ge=1, le=4096)
    #: Seconds a request waits for a free slot on any upstream; then 503 with
    #: ``Retry-After``. Default: ``timeout_seconds``.
    queue_timeout_seconds: float | None = Field(None, ge=0, le=3600)
    #: Upstreams one request is tried on at most (never more than the pool has).
    max_attempts: int = Field(3, ge=1, le=MAX_UPSTREAMS)
    #: Seconds between two health probes (``GET /models``) of each upstream.
    health_interval_seconds: float = Field(5.0, ge=0.05, le=3600)
    #: Consecutive failures that open an upstream's circuit breaker.
    breaker_failures: int = Field(3, ge=1, le=1000)
    #: Seconds an open breaker keeps its upstream out before one probe may close it.
    breaker_cooldown_seconds: float = Field(10.0, ge=0.01, le=3600)
    #: Extra headers sent with every request (not ``Authorization``: use ``api_key``).
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("base_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        return None if value is None else _http_url(value)

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        return _plain_headers(headers)
