"""The options an ``openai_upstream`` model accepts under ``models[].options``."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from inferflux_core.errors import ConfigError

_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}")
#: Headers the backend sets itself: the credential comes from ``api_key`` / ``api_key_env``.
_RESERVED_HEADERS = {"authorization", "content-type", "accept", "host", "content-length"}


class OpenAIUpstreamOptions(BaseModel):
    """Where the upstream is and how to call it; unknown keys are an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The upstream's OpenAI base URL, as the OpenAI SDK takes it (``http://host:8000/v1``);
    #: a URL with no path gets ``/v1``.
    base_url: str = Field(min_length=1, max_length=2048)
    #: The model name the upstream serves; default: the model's ``source``.
    upstream_model: str | None = Field(None, min_length=1, max_length=256)
    #: The upstream's API key, sent as ``Authorization: Bearer``.
    api_key: SecretStr | None = None
    #: An environment variable holding the API key (read at startup).
    api_key_env: str | None = Field(None, min_length=1, max_length=256)
    #: Seconds to connect, and at most between two chunks of a stream.
    timeout_seconds: float = Field(60.0, gt=0, le=3600)
    #: Requests in flight to the upstream at once; more wait (up to ``timeout_seconds``).
    max_concurrent: int = Field(64, ge=1, le=4096)
    #: Extra headers sent with every request (not ``Authorization``: use ``api_key``).
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not hold credentials: use api_key or api_key_env")
        if parts.query or parts.fragment:
            raise ValueError("must not have a query or a fragment")
        path = parts.path.rstrip("/") or "/v1"
        return urlunsplit((parts.scheme, parts.netloc, path, "", ""))

    @field_validator("headers")
    @classmethod
    def _plain_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"{name[:64]!r} is not a header name")
            if name.lower() in _RESERVED_HEADERS:
                raise ValueError(f"{name!r} is set by the backend (use api_key for credentials)")
            if any(c in value for c in "\r\n\0") or len(value) > 8192:
                raise ValueError(f"the value of {name!r} must be one line of at most 8192 chars")
        return headers


def parse_options(model_name: str, options: Mapping[str, Any]) -> OpenAIUpstreamOptions:
    """Validate ``options``; a ConfigError names ``models.<name>.options.<key>`` and the problem."""
    prefix = f"models.{model_name}.options"
    try:
        parsed = OpenAIUpstreamOptions.model_validate(dict(options))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in (prefix, *e['loc']))}: {e['msg']}" for e in exc.errors()
        )
        first = ".".join(str(p) for p in (prefix, *exc.errors()[0]["loc"]))
        raise ConfigError(f"invalid openai_upstream option {problems}", param=first) from None
    if parsed.api_key is not None and parsed.api_key_env is not None:
        raise ConfigError(
            f"{prefix}: set api_key or api_key_env, not both", param=f"{prefix}.api_key_env"
        )
    return parsed


def api_key(model_name: str, options: OpenAIUpstreamOptions) -> str | None:
    """The API key ``options`` give, read from the environment for ``api_key_env``.

    A named variable that is unset or empty is a ConfigError (which never holds a key).
    """
    if options.api_key is not None:
        return options.api_key.get_secret_value()
    if options.api_key_env is None:
        return None
    value = os.environ.get(options.api_key_env, "")
    if not value:
        raise ConfigError(
            f"models.{model_name}.options.api_key_env: the environment variable "
            f"{options.api_key_env} is not set",
            param=f"models.{model_name}.options.api_key_env",
        )
    return value
