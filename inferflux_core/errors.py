"""Every error inferflux raises on purpose, each mapped to an HTTP status and OpenAI error type.

The API layer renders any :class:`InferfluxError` as ``{"error": {"message", "type", "param",
"code"}}`` with :attr:`InferfluxError.status`; nothing else decides statuses.
"""

from __future__ import annotations

from collections.abc import Mapping


class InferfluxError(Exception):
    """Base of inferflux's errors; carries what the HTTP layer needs to render it."""

    status: int = 500
    error_type: str = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = headers or {}

    def to_body(self) -> dict[str, dict[str, str | None]]:
        """The OpenAI-shaped error body."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequestError(InferfluxError):
    """The request is malformed or asks for something impossible (400)."""

    status = 400
    error_type = "invalid_request_error"


class ContextLengthError(InvalidRequestError):
    """The prompt (plus requested tokens) does not fit the model's context (400)."""

    code = "context_length_exceeded"


class ModelNotFoundError(InferfluxError):
    """The request names a model that is not loaded (404)."""

    status = 404
    error_type = "invalid_request_error"
    code = "model_not_found"


class NotFoundError(InferfluxError):
    """No such route or resource (404)."""

    status = 404
    error_type = "invalid_request_error"
    code = "not_found"


class MethodNotAllowedError(InferfluxError):
    """The route exists but not for this HTTP method (405)."""

    status = 405
    error_type = "invalid_request_error"
    code = "method_not_allowed"


class PayloadTooLargeError(InferfluxError):
    """The request body exceeds the configured limit (413)."""

    status = 413
    error_type = "invalid_request_error"
    code = "request_too_large"


class AuthenticationError(InferfluxError):
    """No credential, or one that is not valid (401, with ``WWW-Authenticate: Bearer``).

    The message never repeats the credential it was given.
    """

    status = 401
    error_type = "authentication_error"
    code = "invalid_api_key"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message, code=code, headers={"WWW-Authenticate": "Bearer"})


class PermissionDeniedError(InferfluxError):
    """A valid credential without the scope or the model the request needs (403)."""

    status = 403
    error_type = "permission_error"
    code = "insufficient_scope"


class RateLimitError(InferfluxError):
    """The key's requests or tokens per minute are spent; ``Retry-After`` says when (429)."""

    status = 429
    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"


class GuardrailError(InvalidRequestError):
    """A guardrail refused the request's prompt or the model's output (400)."""

    code = "content_blocked"


class QueueFullError(InferfluxError):
    """The scheduler's queue is full; retry later (429)."""

    status = 429
    error_type = "rate_limit_error"
    code = "queue_full"


class ServiceUnavailableError(InferfluxError):
    """The engine cannot take the request now (shutting down, model not ready) (503)."""

    status = 503
    error_type = "server_error"
    code = "service_unavailable"


class ServerBusyError(ServiceUnavailableError):
    """Every worker that prepares requests (tokenizing, templates, schemas, grammars) is busy
    and as many jobs wait as may: retry shortly (503, ``Retry-After``)."""

    code = "server_busy"


class GuardrailUnavailableError(ServiceUnavailableError):
    """A guardrail could not decide (its policy server is down): the request is refused (503)."""

    code = "guardrail_unavailable"


class PolicyStoreError(InferfluxError):
    """The policy store cannot be opened or written: wrong passphrase, tampered, rolled back.

    At startup it stops the server with its message; while serving, requests that need the
    policy are refused (503) rather than served without it.
    """

    status = 503
    error_type = "server_error"
    code = "policy_store_unavailable"


class BackendError(InferfluxError):
    """The backend failed a step; the affected requests fail (503), the server keeps serving."""

    status = 503
    error_type = "server_error"
    code = "backend_error"


class SequencesFailedError(InvalidRequestError):
    """Raised by a step backend's ``decode`` when some sequences failed on their own (their
    grammar could not go on, say) while the step itself ran. ``sampled`` holds the tokens of
    the others, which go on as if nothing happened; ``failures`` says, per seq_id, what that
    sequence's request is told (a 400: its own input caused it, so it counts as no failure
    of the model)."""

    code = "generation_failed"

    def __init__(self, sampled: Mapping[int, int], failures: Mapping[int, str]) -> None:
        super().__init__("; ".join(sorted(set(failures.values()))))
        self.sampled = dict(sampled)
        self.failures = dict(failures)

    def error_for(self, seq_id: int) -> InvalidRequestError:
        """What the request of failed sequence ``seq_id`` gets."""
        return InvalidRequestError(self.failures[seq_id], code=self.code)


class UpstreamRequestError(InferfluxError):
    """An upstream model server (a request-level backend's) refused the request with a 4xx:
    its status, and its message, type, ``param`` and ``code`` where it sent them, pass through
    (a 429 keeps its ``Retry-After``)."""

    error_type = "invalid_request_error"
    code = "upstream_error"

    def __init__(
        self,
        message: str,
        *,
        status: int,
        error_type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, param=param, code=code, headers=headers)
        self.status = status
        if error_type is not None:
            self.error_type = error_type


class UpstreamUnavailableError(ServiceUnavailableError):
    """An upstream model server failed (a 5xx), could not be reached, timed out or sent a
    malformed stream (503)."""

    code = "upstream_unavailable"


class FatalBackendError(BackendError):
    """The backend cannot go on (device lost, state corrupt): the engine marks the model failed
    at once instead of after repeated failed steps."""


class ModelFailedError(ServiceUnavailableError):
    """The model's step loop gave up (a broken backend or scheduler): every request for it is
    refused with 503 until the server restarts, and ``/readyz`` names the model and reason."""

    code = "model_failed"


class InsufficientMemoryError(InferfluxError):
    """A model was refused before loading: its memory estimate (weights, KV cache, compute
    buffers) exceeds the device's free memory; the message names both figures and what to
    lower (507).

    507 Insufficient Storage, not a 4xx: the request is well formed and may succeed once the
    server has room (another model unloaded, a smaller ``context_length`` configured), so it
    is no client error; and not 503, which clients and proxies retry at once, to the same
    refusal. 409 would say the request conflicts with a resource's state, which a size does
    not. See docs/planning.md.
    """

    status = 507
    error_type = "server_error"
    code = "insufficient_memory"


class ClientDisconnectedError(InferfluxError):
    """The client hung up before its response was ready; the request was cancelled (499).

    Nobody reads the response; the status is for the audit line and the logs.
    """

    status = 499
    error_type = "invalid_request_error"
    code = "client_disconnected"


class KVTransportClosedError(ServiceUnavailableError):
    """A KV transport was closed: no more blocks can be sent, or none is left to receive."""

    code = "kv_transport_closed"


class ConfigError(InferfluxError):
    """The configuration is invalid; raised at startup, names the key and the problem."""


class ModelFileError(ConfigError):
    """A model file is missing, truncated or malformed; names the file."""


class PullError(InvalidRequestError):
    """A model pull failed: a source refused by the registry's rules, a download cut off or
    over its cap, a digest that does not match, a file that is not GGUF (400). Nothing is
    registered; only a resumable ``.partial`` download may be left (docs/registry.md)."""

    code = "pull_failed"


class ModelExistsError(InferfluxError):
    """The registry already holds a model of that name (409)."""

    status = 409
    error_type = "invalid_request_error"
    code = "model_exists"


class ChatTemplateError(InvalidRequestError):
    """The chat template is missing, or failed / ran over its limits while rendering."""

    code = "chat_template_error"


class PluginError(ConfigError):
    """A plugin failed to load or registered a name another plugin already has."""
