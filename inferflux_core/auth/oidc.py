"""Verifying OIDC bearer JWTs with PyJWT, and mapping a claim to inferflux roles.

What the token says about how to verify it is not trusted: the algorithm is the one the
issuer's key type implies (RSA: RS256, EC P-256: ES256), from a list fixed here and narrowed by
config; ``jku``, ``x5u``, ``x5c`` and embedded ``jwk`` headers are refused, never fetched; a
``crit`` header is refused (no extension is understood); a token over 16 KB, or whose header
is over 2 KB or nested, is refused before it is parsed; ``iss`` must equal the configured
issuer exactly; ``exp``, ``iat`` and ``nbf`` must be numbers, and a token may not be valid for
longer than ``max_token_lifetime_seconds`` (from ``iat``, and from now).

Roles: with an empty ``role_map`` the claim's values name inferflux roles directly, except a
role that grants the ``admin`` scope: that only ever comes from an explicit ``role_map`` entry.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import re
import time
from collections.abc import Collection, Iterable
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from inferflux_core.auth.jwks import JwksCache
from inferflux_core.config import OidcConfig
from inferflux_core.contracts.policy import PROJECT_NAME_PATTERN
from inferflux_core.errors import AuthenticationError

log = logging.getLogger(__name__)

MAX_TOKEN_BYTES = 16 * 1024
#: A JOSE header is a few short fields: anything larger or nested is refused unparsed.
MAX_HEADER_BYTES = 2048
MAX_HEADER_DEPTH = 2
MIN_RSA_BITS = 2048
#: The only algorithms ever accepted, and the key type each needs.
KEY_TYPE_OF = {"RS256": "RSA", "ES256": "EC"}
ALGORITHM_FOR = {kty: alg for alg, kty in KEY_TYPE_OF.items()}
REFUSED_HEADERS = frozenset({"jku", "x5u", "x5c", "jwk", "crit"})
_JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


def looks_like_jwt(token: str) -> bool:
    """Three base64url parts separated by dots."""
    return _JWT_SHAPE.fullmatch(token) is not None


def _invalid(reason: str) -> AuthenticationError:
    return AuthenticationError(f"the bearer token is not valid: {reason}", code="invalid_token")


class OidcVerifier:
    """Checks a bearer JWT and returns its claims; 401 (never anything else) when it fails."""

    def __init__(self, config: OidcConfig, jwks: JwksCache | None = None) -> None:
        self.config = config
        self.jwks = jwks or JwksCache(
            issuer=config.issuer,
            jwks_url=config.jwks_url,
            ttl=config.jwks_cache_seconds,
            min_refresh=config.jwks_min_refresh_seconds,
            timeout=config.timeout_seconds,
        )
        self._algorithms = frozenset(config.algorithms) & KEY_TYPE_OF.keys()

    async def verify(self, token: str) -> dict[str, Any]:
        """The verified claims of ``token``."""
        try:
            return await self._verify(token)
        except (
            TypeError,
            ValueError,
            KeyError,
            AttributeError,
            ArithmeticError,
            RecursionError,
        ) as exc:
            # A shape no check above foresaw: still a refusal, never a 500.
            log.warning("token refused on an unexpected shape: %s: %s", type(exc).__name__, exc)
            raise _invalid("it is malformed") from None

    async def _verify(self, token: str) -> dict[str, Any]:
        if len(token) > MAX_TOKEN_BYTES:
            raise _invalid(f"it is larger than {MAX_TOKEN_BYTES} bytes")
        if not looks_like_jwt(token):
            raise _invalid("it is not a JWT")
        header = _header(token)
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in self._algorithms:
            raise _invalid(f"algorithm {str(algorithm)[:16]!r} is not accepted")
        refused = REFUSED_HEADERS & header.keys()
        if refused:
            raise _invalid(f"header {sorted(refused)[0]!r} is not accepted")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > 256:
            raise _invalid("it has no key id ('kid')")
        jwk = await self.jwks.get(kid)
        if jwk is None:
            raise _invalid("its key id is not one of the issuer's keys")
        key, expected = _public_key(jwk)
        if algorithm != expected:
            raise _invalid("its algorithm does not match the issuer's key")
        return self._decode(token, key, expected)

    def project(self, claims: dict[str, Any]) -> str | None:
        """The token's project from ``project_claim`` (None when none is configured); 401 for
        a token without a valid one, which must not fall back to seeing every model."""
        path = self.config.project_claim
        if path is None:
            return None
        value: Any = claims
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if not isinstance(value, str) or not re.fullmatch(PROJECT_NAME_PATTERN, value):
            raise AuthenticationError(f"the token has no valid {path!r} claim (its project)")
        return value

    def roles(self, claims: dict[str, Any], privileged: Collection[str] = ("admin",)) -> list[str]:
        """inferflux roles from the configured claim (a list, or a space-separated string).

        Without a ``role_map``, claim values are role names, but never one of ``privileged``
        (the roles granting ``admin``): only the operator's ``role_map`` can grant those.
        """
        value: Any = claims
        for part in self.config.roles_claim.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, str):
            names: Iterable[Any] = value.split()
        elif isinstance(value, list):
            names = value
        else:
            return []
        role_map = self.config.role_map
        roles: list[str] = []
        for name in names:
            if not isinstance(name, str):
                continue
            if role_map:
                roles.extend(role_map.get(name, []))
            elif name not in privileged:
                roles.append(name)
        return roles

    def _decode(self, token: str, key: Any, algorithm: str) -> dict[str, Any]:
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[algorithm],
                audience=self.config.audience,
                issuer=self.config.issuer,
                leeway=self.config.leeway_seconds,
                options={"require": ["exp", "iss", "aud", "sub"], "verify_signature": True},
            )
        except jwt.ExpiredSignatureError:
            raise _invalid("it has expired") from None
        except jwt.ImmatureSignatureError:
            raise _invalid("it is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise _invalid("it is not meant for this server (aud)") from None
        except jwt.InvalidIssuerError:
            raise _invalid("it comes from another issuer (iss)") from None
        except jwt.MissingRequiredClaimError as exc:
            raise _invalid(f"it lacks the {exc.claim!r} claim") from None
        except jwt.InvalidSignatureError:
            raise _invalid("its signature does not verify") from None
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            log.debug("token refused: %s", exc)
            raise _invalid("it is malformed") from None
        if claims.get("iss") != self.config.issuer:
            raise _invalid("it comes from another issuer (iss)")
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise _invalid("its subject ('sub') is not a string")
        self._check_lifetime(claims)
        return claims

    def _check_lifetime(self, claims: dict[str, Any]) -> None:
        """Numeric times, and no validity longer than ``max_token_lifetime_seconds``."""
        for name in ("exp", "iat", "nbf"):
            value = claims.get(name)
            if name in claims and not _is_time(value):
                raise _invalid(f"its {name!r} is not a time")
        longest = self.config.max_token_lifetime_seconds + self.config.leeway_seconds
        exp = claims["exp"]
        if exp > time.time() + longest:
            raise _invalid(
                f"it is valid for longer than {self.config.max_token_lifetime_seconds} s (exp)"
            )
        start = claims.get("iat", claims.get("nbf"))
        if start is not None and exp - start > longest:
            raise _invalid(
                f"it is valid for longer than {self.config.max_token_lifetime_seconds} s "
                "(exp - iat)"
            )


def _is_time(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _header(token: str) -> dict[str, Any]:
    encoded = token.split(".", 1)[0]
    if len(encoded) > MAX_HEADER_BYTES * 4 // 3 + 4:
        raise _invalid(f"its header is larger than {MAX_HEADER_BYTES} bytes")
    try:
        raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except (binascii.Error, ValueError):
        raise _invalid("its header is not base64url JSON") from None
    if _nesting(raw) > MAX_HEADER_DEPTH:
        raise _invalid("its header is nested too deeply")
    try:
        header = json.loads(raw)
    except ValueError:
        raise _invalid("its header is not base64url JSON") from None
    if not isinstance(header, dict):
        raise _invalid("its header is not a JSON object")
    return header


def _nesting(raw: bytes) -> int:
    """How deeply JSON arrays and objects nest in ``raw`` (brackets in strings not counted)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        elif byte in b"]}":
            depth -= 1
    return deepest


def _public_key(jwk: dict[str, Any]) -> tuple[Any, str]:
    """The issuer's key and the one algorithm its type allows; refused if anything is off."""
    kty = jwk.get("kty")
    algorithm = ALGORITHM_FOR.get(kty) if isinstance(kty, str) else None
    if algorithm is None:
        raise _invalid("the issuer's key is of an unsupported type")
    if "alg" in jwk and jwk["alg"] != algorithm:
        raise _invalid("the issuer's key is for another algorithm")
    if jwk.get("use", "sig") != "sig":
        raise _invalid("the issuer's key is not a signing key")
    if "d" in jwk:
        raise _invalid("the issuer published a private key")
    try:
        key = jwt.PyJWK(jwk, algorithm=algorithm).key
    except (jwt.PyJWTError, ValueError, TypeError, KeyError):
        raise _invalid("the issuer's key cannot be read") from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise _invalid("the issuer's RSA key is shorter than 2048 bits")
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise _invalid("the issuer's EC key is not on P-256")
    else:
        raise _invalid("the issuer's key is not a public key")
    return key, algorithm
