"""Access control for one server: the policy store, OIDC, rate limits, guardrails and audit.

:class:`AccessControl` turns an ``Authorization`` header into a :class:`Principal` (or a 401);
the middleware in :mod:`inferflux_core.api.access_middleware` applies it to every request.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from inferflux_core.audit import AuditLog, audit_record
from inferflux_core.auth.keys import PREFIX, key_matches, parse_key_id
from inferflux_core.auth.oidc import MAX_TOKEN_BYTES, OidcVerifier, looks_like_jwt
from inferflux_core.auth.principal import Principal, anonymous
from inferflux_core.auth.projects import ProjectScope
from inferflux_core.auth.scopes import admin_roles, resolve_scopes
from inferflux_core.auth.store_guard import GuardedPolicyStore
from inferflux_core.config import Settings
from inferflux_core.contracts import Policy, PolicyStore, RateLimits
from inferflux_core.errors import AuthenticationError, ConfigError, InferfluxError, PluginError
from inferflux_core.guardrails import GuardrailChain
from inferflux_core.plugins import PluginHost
from inferflux_core.ratelimit import RateLimiter

log = logging.getLogger(__name__)

MAX_SUBJECT_CHARS = 128
REQUEST_FINISHED = "on_request_finished"


def open_policy_store(settings: Settings, plugins: PluginHost) -> PolicyStore:
    """Construct the configured policy store (which refuses data it cannot trust).

    The store is wrapped in a :class:`GuardedPolicyStore`, so that a failure while serving
    refuses the request (503) instead of letting it through or answering 500.
    """
    name = settings.policy.store
    factory = plugins.get("policy_stores", name)
    plugin = plugins.plugin_of("policy_stores", name)
    try:
        store: PolicyStore = factory(**settings.policy.options)
    except TypeError as exc:
        raise ConfigError(f"policy.options: {exc}") from None
    except InferfluxError:
        raise
    except Exception as exc:
        raise PluginError(
            f"policy store {name!r} (plugin {plugin!r}) failed to open: {type(exc).__name__}: {exc}"
        ) from exc
    return GuardedPolicyStore(store, name=name, plugin=plugin)


def bearer_token(header: str | None) -> str:
    """The token of ``Authorization: Bearer <token>``; 401 if there is none or it is odd."""
    if not header:
        raise AuthenticationError(
            "no credential: send 'Authorization: Bearer <API key>'", code="missing_credentials"
        )
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthenticationError("the Authorization header must be 'Bearer <API key>'")
    if len(token) > MAX_TOKEN_BYTES or not token.isascii() or not token.isprintable():
        raise AuthenticationError("the API key is not valid")
    if " " in token:
        raise AuthenticationError("the Authorization header must be 'Bearer <API key>'")
    return token


def authorization_of(authorization: str | None, api_key: str | None) -> str | None:
    """The ``Authorization`` value to authenticate: the one sent, else ``Bearer <key>`` for
    an ``x-api-key`` header (Anthropic's clients send that one; the HTTP layer passes it on
    Anthropic's routes only); 401 if both are sent and name different credentials."""
    key = (api_key or "").strip()
    if not key:
        return authorization
    if authorization is None:
        return f"Bearer {key}"
    if bearer_token(authorization) != key:
        raise AuthenticationError(
            "the Authorization and x-api-key headers hold different credentials; send one"
        )
    return authorization


class AccessControl:
    """Decides who a request comes from and what it may do."""

    def __init__(
        self,
        settings: Settings,
        store: PolicyStore,
        *,
        verifier: OidcVerifier | None = None,
        guardrails: GuardrailChain | None = None,
        audit: AuditLog | None = None,
        plugins: PluginHost | None = None,
    ) -> None:
        self.settings = settings
        self.plugins = plugins
        self.store = store
        self.verifier = verifier
        self.guardrails = guardrails or GuardrailChain()
        self.audit = audit
        self.limiter = RateLimiter()
        #: Which models each caller may see; the app points it at its engine's models.
        self.projects = ProjectScope()
        defaults = settings.rate_limits
        self._config_limits = RateLimits(
            requests_per_minute=defaults.requests_per_minute,
            tokens_per_minute=defaults.tokens_per_minute,
        )
        if not self.enabled:
            log.warning(
                "auth.mode is disabled: every route is served, with every scope, to anyone "
                "who can reach the server"
            )

    @classmethod
    def from_settings(cls, settings: Settings, plugins: PluginHost) -> AccessControl:
        """Everything ``settings`` configures, built with the plugins' stores and guardrails."""
        store = open_policy_store(settings, plugins)
        oidc = settings.auth.oidc
        return cls(
            settings,
            store,
            verifier=OidcVerifier(oidc) if oidc is not None else None,
            guardrails=GuardrailChain.from_config(settings.guardrails, plugins),
            audit=AuditLog(settings.audit) if settings.audit.enabled else None,
            plugins=plugins,
        )

    @property
    def records_requests(self) -> bool:
        """Whether finished requests are recorded: the audit log, or a plugin's
        ``on_request_finished``."""
        return self.audit is not None or self._has_request_sinks

    @property
    def _has_request_sinks(self) -> bool:
        return self.plugins is not None and self.plugins.has_implementations(REQUEST_FINISHED)

    def record_finished(
        self, entry: dict[str, Any], *, prompt: str | None, response: str | None
    ) -> None:
        """Write the audit line and tell ``on_request_finished`` plugins (whose failures are
        logged naming them, never raised)."""
        if not self.records_requests:
            return
        record = audit_record(
            entry,
            prompt=prompt,
            response=response,
            record_text=self.settings.audit.record_text,
        )
        if self.audit is not None:
            self.audit.write_record(record)
        if self.plugins is not None and self._has_request_sinks:
            self.plugins.notify(REQUEST_FINISHED, record=record)

    @property
    def enabled(self) -> bool:
        """Whether requests need a credential (``auth.mode: keys``)."""
        return self.settings.auth.mode != "disabled"

    def default_limits(self, policy: Policy) -> RateLimits:
        """The limits of a caller without its own: the policy's, then the configuration's."""
        return policy.default_limits.over(self._config_limits)

    async def authenticate(
        self, authorization: str | None, api_key: str | None = None
    ) -> Principal:
        """The caller behind an ``Authorization`` (or ``x-api-key``) header; 401 if there is
        none or it fails."""
        if not self.enabled:
            return anonymous(self.default_limits(await self.store.read_async()))
        token = bearer_token(authorization_of(authorization, api_key))
        if token.startswith(PREFIX):
            return self._key_principal(token, await self.store.read_async())
        if self.verifier is not None and looks_like_jwt(token):
            return await self._token_principal(token)
        raise AuthenticationError("the API key is not valid")

    def _key_principal(self, key: str, policy: Policy) -> Principal:
        key_id = parse_key_id(key)
        record = policy.keys.get(key_id) if key_id is not None else None
        matched = key_matches(key, record)  # hashed and compared even when no record exists
        if record is None or not matched:
            raise AuthenticationError("the API key is not valid")
        if record.revoked:
            raise AuthenticationError("the API key has been revoked")
        if record.expires_at is not None and time.time() >= record.expires_at:
            raise AuthenticationError("the API key has expired")
        return Principal(
            key_id=record.key_id,
            kind="api_key",
            scopes=resolve_scopes(record.roles, record.scopes, policy.roles),
            models=record.models,
            limits=record.limits.over(self.default_limits(policy)),
            own_limits=record.limits,
            max_priority=record.max_priority,
            expires_at=record.expires_at,
            project=record.project,
        )

    async def _token_principal(self, token: str) -> Principal:
        assert self.verifier is not None
        claims = await self.verifier.verify(token)
        policy = await self.store.read_async()
        return Principal(
            key_id=f"oidc:{claims['sub'][:MAX_SUBJECT_CHARS]}",
            kind="oidc",
            scopes=resolve_scopes(
                self.verifier.roles(claims, admin_roles(policy)), (), policy.roles
            ),
            limits=self.default_limits(policy),
            max_priority=self.verifier.config.max_priority,
            project=self.verifier.project(claims),
        )

    async def close(self) -> None:
        """Close the guardrails, the audit file and the store."""
        await self.guardrails.close()
        if self.audit is not None:
            self.audit.close()
        self.store.close()
