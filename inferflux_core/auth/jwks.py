"""The OIDC issuer's signing keys (JWKS): fetched, cached for a TTL, refreshed on a new ``kid``.

Only the configured URL (or the one the issuer's discovery document names) is ever fetched;
a URL carried in a token (``jku``, ``x5u``) never is. An unknown ``kid`` triggers at most one
refresh per ``min_refresh`` seconds, so tokens with made-up ids cannot make the server hammer
the issuer. If a refresh fails, the keys already held stay in use.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx

from inferflux_core.errors import ConfigError, ServiceUnavailableError

log = logging.getLogger(__name__)

MAX_DOCUMENT_BYTES = 256 * 1024
DISCOVERY_PATH = "/.well-known/openid-configuration"


def check_fetch_url(url: str, what: str) -> None:
    """ConfigError unless ``url`` is https, or http to a loopback address (tests, sidecars)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname and is_loopback(parts.hostname):
        return
    raise ConfigError(f"{what} must be an https:// URL (http:// only to loopback): {url!r}")


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class JwksCache:
    """Signing keys by ``kid``, fetched from the issuer and refreshed as the docstring says."""

    def __init__(
        self,
        *,
        issuer: str,
        jwks_url: str | None,
        ttl: float,
        min_refresh: float,
        timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if jwks_url is not None:
            check_fetch_url(jwks_url, "auth.oidc.jwks_url")
        else:
            check_fetch_url(issuer, "auth.oidc.issuer")
        self._issuer = issuer
        self._jwks_url = jwks_url
        self._ttl = ttl
        self._min_refresh = min_refresh
        self._timeout = timeout
        self._clock = clock
        self._keys: dict[str, dict[str, Any]] | None = None
        self._fetched_at = float("-inf")
        self._attempted_at = float("-inf")
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def get(self, kid: str) -> dict[str, Any] | None:
        """The JWK with ``kid``, or None; 503 if no keys could be fetched yet."""
        keys = self._keys
        if keys is None or kid not in keys or self._clock() - self._fetched_at > self._ttl:
            await self._refresh()
        if self._keys is None:
            raise ServiceUnavailableError(
                "the OIDC issuer's signing keys cannot be fetched", code="oidc_unavailable"
            )
        return self._keys.get(kid)

    async def _refresh(self) -> None:
        """Fetch the keys, at most once per ``min_refresh`` seconds whatever asks for it."""
        async with self._lock:
            now = self._clock()
            if now - self._attempted_at < self._min_refresh:
                return
            self._attempted_at = now
            try:
                keys = await self._fetch_keys()
            except (httpx.HTTPError, ValueError, ConfigError) as exc:
                log.warning("cannot refresh the OIDC signing keys: %s", exc)
                return
            self._keys = keys
            self._fetched_at = now

    async def _fetch_keys(self) -> dict[str, dict[str, Any]]:
        async with httpx.AsyncClient(timeout=self._timeout, follow_redirects=False) as client:
            url = self._jwks_url or await self._discover(client)
            self.fetches += 1
            document = await _get_json(client, url)
        entries = document.get("keys")
        if not isinstance(entries, list):
            raise ValueError("the JWKS has no 'keys' list")
        keys: dict[str, dict[str, Any]] = {}
        for entry in entries:
            if isinstance(entry, dict) and isinstance(entry.get("kid"), str):
                keys[entry["kid"]] = entry
        return keys

    async def _discover(self, client: httpx.AsyncClient) -> str:
        document = await _get_json(client, self._issuer.rstrip("/") + DISCOVERY_PATH)
        if document.get("issuer") != self._issuer:
            raise ValueError("the discovery document names a different issuer")
        url = document.get("jwks_uri")
        if not isinstance(url, str):
            raise ValueError("the discovery document has no jwks_uri")
        check_fetch_url(url, "the issuer's jwks_uri")
        return url


async def _get_json(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    """GET a JSON object of at most MAX_DOCUMENT_BYTES."""
    async with client.stream("GET", url, headers={"Accept": "application/json"}) as response:
        response.raise_for_status()
        data = bytearray()
        async for piece in response.aiter_bytes():
            data.extend(piece)
            if len(data) > MAX_DOCUMENT_BYTES:
                raise ValueError(f"{url} answered more than {MAX_DOCUMENT_BYTES} bytes")
    document = json.loads(data)
    if not isinstance(document, dict):
        raise ValueError(f"{url} did not answer a JSON object")
    return document
