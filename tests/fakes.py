"""Stand-ins on loopback for the services the security features talk to: an OIDC issuer's
JWKS endpoint (with keys made in the test) and an OPA server's data API."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa


class LocalHttpServer:
    """A threading HTTP server on 127.0.0.1 answering with ``handle(method, path, body)``."""

    def __init__(self, handle: Callable[[str, str, bytes], tuple[int, Any]]) -> None:
        self.requests: list[tuple[str, str, bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                outer.requests.append((self.command, self.path, body))
                status, payload = handle(self.command, self.path, body)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()


def b64url(data: bytes) -> str:
    """Unpadded base64url."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Issuer:
    """An OIDC issuer: an RSA and an EC signing key, published as a JWKS on loopback."""

    def __init__(self) -> None:
        self.rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec_key = ec.generate_private_key(ec.SECP256R1())
        self.keys: dict[str, dict[str, Any]] = {
            "rsa-1": self._jwk(self.rsa_key, "rsa-1", "RS256"),
            "ec-1": self._jwk(self.ec_key, "ec-1", "ES256"),
        }
        self.http = LocalHttpServer(self._handle)
        self.issuer = self.http.url + "/realm"
        self.audience = "inferflux"

    @property
    def jwks_url(self) -> str:
        """Where the JWKS is served."""
        return self.http.url + "/jwks"

    @property
    def jwks_fetches(self) -> int:
        """How many times the JWKS was fetched."""
        return sum(1 for _, path, _ in self.http.requests if path == "/jwks")

    def claims(self, **overrides: Any) -> dict[str, Any]:
        """Valid claims for a user with ``roles: [user]``, changed by ``overrides``."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": "alice",
            "iat": now,
            "exp": now + 300,
            "roles": ["user"],
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def token(
        self,
        claims: dict[str, Any] | None = None,
        *,
        kid: str = "rsa-1",
        algorithm: str | None = None,
        headers: dict[str, Any] | None = None,
        key: Any = None,
    ) -> str:
        """A JWT signed with the issuer's key ``kid`` (or ``key``)."""
        algorithm = algorithm or ("ES256" if kid.startswith("ec") else "RS256")
        signing_key = key or (self.ec_key if kid.startswith("ec") else self.rsa_key)
        return jwt.encode(
            claims if claims is not None else self.claims(),
            signing_key,
            algorithm=algorithm,
            headers={"kid": kid, **(headers or {})},
        )

    def close(self) -> None:
        """Stop the JWKS server."""
        self.http.close()

    @staticmethod
    def _jwk(private_key: Any, kid: str, alg: str) -> dict[str, Any]:
        algorithm = jwt.get_algorithm_by_name(alg)
        jwk = json.loads(algorithm.to_jwk(private_key.public_key()))
        return {**jwk, "kid": kid, "alg": alg, "use": "sig"}

    def _handle(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        if path == "/jwks":
            return 200, {"keys": list(self.keys.values())}
        if path == "/realm/.well-known/openid-configuration":
            return 200, {"issuer": self.issuer, "jwks_uri": self.jwks_url}
        return 404, {"error": "not found"}


class FakeOpa:
    """OPA's data API: ``POST /v1/data/inferflux/allow`` answers ``{"result": ...}``.

    The policy: allow unless the prompt contains ``forbidden-by-opa``; ``mode`` can make it
    answer an undefined result or a server error instead.
    """

    POLICY = "inferflux/allow"

    def __init__(self) -> None:
        self.mode = "policy"
        self.inputs: list[dict[str, Any]] = []
        self.http = LocalHttpServer(self._handle)

    @property
    def url(self) -> str:
        """OPA's base URL."""
        return self.http.url

    def close(self) -> None:
        """Stop serving."""
        self.http.close()

    def _handle(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        if method != "POST" or path != f"/v1/data/{self.POLICY}":
            return 404, {"code": "not_found"}
        data = json.loads(body)["input"]
        self.inputs.append(data)
        if self.mode == "undefined":
            return 200, {}
        if self.mode == "error":
            return 500, {"code": "internal_error"}
        if "forbidden-by-opa" in data.get("text", ""):
            return 200, {"result": {"allow": False, "reason": "topic not allowed"}}
        return 200, {"result": True}
