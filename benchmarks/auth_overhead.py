"""What access control costs: the policy file's key derivation, and auth per request.

Run from the repository root (no model is loaded; nothing listens on a port)::

    python benchmarks/auth_overhead.py [--requests 20000]

It prints:

1. scrypt at the policy file's parameters (N=2^17, r=8, p=1): the one-time unlock at startup;
2. per-request time of ``GET /v1/models`` through the whole falcon ASGI app, called directly
   (no sockets), with ``auth.mode: disabled``, with an API key (memory store), with an API key
   in the encrypted file store (one ``stat`` per request), and with an OIDC RS256 token
   (signature verified per request), so the difference is what authentication adds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from inferflux_core.auth.access import AccessControl  # noqa: E402
from inferflux_core.auth.policy_admin import KeyCreate, PolicyAdmin  # noqa: E402
from inferflux_core.bootstrap import create_app  # noqa: E402
from inferflux_core.config import Settings  # noqa: E402
from inferflux_core.engine import Engine  # noqa: E402
from inferflux_plugins.policy.sealed import DEFAULT_KDF  # noqa: E402


def time_scrypt(repeats: int = 3) -> list[float]:
    """Seconds per key derivation at the default parameters."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        DEFAULT_KDF.derive(b"a passphrase", os.urandom(16))
        times.append(time.perf_counter() - started)
    return times


async def _call(app: Any, headers: list[tuple[bytes, bytes]]) -> int:
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/v1/models",
        "raw_path": b"/v1/models",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    await app(scope, receive, send)
    return status


async def per_request(app: Any, headers: list[tuple[bytes, bytes]], n: int) -> float:
    """Median microseconds per request over 5 rounds of ``n // 5``."""
    assert await _call(app, headers) == 200
    rounds = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(n // 5):
            await _call(app, headers)
        rounds.append((time.perf_counter() - started) / (n // 5) * 1e6)
    return statistics.median(rounds)


def build(settings: Settings) -> tuple[Any, AccessControl]:
    """An app over an engine with no model loaded (``/v1/models`` lists none)."""
    engine = Engine(settings)
    access = AccessControl.from_settings(settings, engine.plugins)
    return create_app(engine, access=access), access


def oidc_setup() -> tuple[Settings, str, Any]:
    """A local issuer (tests' fake), settings trusting it, and one token."""
    from tests.fakes import Issuer

    issuer = Issuer()
    settings = Settings.model_validate(
        {
            "auth": {
                "oidc": {
                    "issuer": issuer.issuer,
                    "audience": issuer.audience,
                    "jwks_url": issuer.jwks_url,
                }
            }
        }
    )
    return settings, issuer.token(issuer.claims(exp=int(time.time()) + 3600)), issuer


async def main_async(n: int) -> None:
    """Measure and print."""
    off, _ = build(Settings.model_validate({"auth": {"mode": "disabled"}}))
    on, access = build(Settings())
    key = PolicyAdmin(access.store).create_key(KeyCreate(name="bench"))["key"]
    bearer = [(b"authorization", f"Bearer {key}".encode())]
    with tempfile.TemporaryDirectory() as directory:
        os.environ["INFERFLUX_POLICY_PASSPHRASE"] = "benchmark passphrase"
        file_settings = Settings.model_validate(
            {"policy": {"store": "encrypted_file", "options": {"path": f"{directory}/p.bin"}}}
        )
        on_file, file_access = build(file_settings)
        file_key = PolicyAdmin(file_access.store).create_key(KeyCreate(name="b"))["key"]
        file_bearer = [(b"authorization", f"Bearer {file_key}".encode())]
        oidc_settings, token, issuer = oidc_setup()
        on_oidc, _ = build(oidc_settings)
        results = {
            "auth disabled": await per_request(off, [], n),
            "API key, memory store": await per_request(on, bearer, n),
            "API key, encrypted file store": await per_request(on_file, file_bearer, n),
            "OIDC RS256 token": await per_request(
                on_oidc, [(b"authorization", f"Bearer {token}".encode())], n
            ),
        }
        issuer.close()
    base = results["auth disabled"]
    print(f"GET /v1/models through the ASGI app, median of 5 x {n // 5} calls:")
    for name, micros in results.items():
        extra = "" if name == "auth disabled" else f"  (+{micros - base:.1f} us)"
        print(f"  {name:32} {micros:8.1f} us/request{extra}")


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20000)
    args = parser.parse_args()
    times = time_scrypt()
    print(
        f"scrypt N=2^{DEFAULT_KDF.log2_n}, r={DEFAULT_KDF.r}, p={DEFAULT_KDF.p} "
        f"({DEFAULT_KDF.memory >> 20} MiB): " + ", ".join(f"{t:.3f} s" for t in times)
    )
    asyncio.run(main_async(args.requests))


if __name__ == "__main__":
    main()
