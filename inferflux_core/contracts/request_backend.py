"""The contract a request-level backend implements: an engine that schedules itself.

vLLM (``AsyncLLM.generate(prompt, sampling_params, request_id, priority=...)`` / ``abort``),
SGLang (``Engine.async_generate``) and an OpenAI-compatible HTTP upstream batch, page their KV
and reuse prefixes on their own. inferflux hands such a backend one typed request at a time
and relays the typed events it yields; admission, priority (passed through where the backend
takes it), cancellation, and everything above the engine (front doors, policy, guardrails,
audit, metrics) stay inferflux's. Compare :class:`~inferflux_core.contracts.StepBackend`,
which inferflux steps itself.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel

from inferflux_core.contracts.generation import InferenceEvent, InferenceRequest
from inferflux_core.errors import InvalidRequestError

if TYPE_CHECKING:
    from prometheus_client.registry import Collector


@dataclass(frozen=True, slots=True)
class RequestBackendSpec:
    """What a request-level backend factory receives to serve one model.

    ``source`` is the model's configured source, as the backend understands it (a model id
    for vLLM, the upstream's model name for a gateway); ``options`` the model's ``options``
    from config, already validated against the backend's options model.
    """

    model_name: str
    source: str
    context_length: int
    max_sequences: int
    device: str = "auto"
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RequestBackendCapabilities:
    """What a request-level backend takes, so the engine prepares requests to fit it.

    ``input``: ``messages`` (it renders chat itself: the request keeps its conversation) or
    ``tokens`` (the engine renders the chat template and tokenizes with the backend's
    :meth:`RequestBackend.tokenize`). ``native_tools``: the backend parses tool calls and
    yields :class:`~inferflux_core.contracts.generation.ToolCallDelta` itself; otherwise the
    engine parses them from the text. A request asking for something the backend lacks
    (``logprobs``, ``n > 1``, a grammar, embeddings) is a 400 naming the field, never
    silently dropped.
    """

    input: Literal["messages", "tokens"] = "messages"
    grammar: bool = False
    json_schema: bool = False
    native_tools: bool = False
    logprobs: bool = False
    n: bool = False
    priority: bool = False
    embeddings: bool = False

    def check(self, request: InferenceRequest) -> None:
        """Raise a 400 naming the field of the first thing ``request`` asks for that these
        capabilities lack (``priority`` is a hint, never refused)."""
        refusal = self.refusal(request)
        if refusal is not None:
            raise refusal

    def refusal(self, request: InferenceRequest) -> InvalidRequestError | None:
        """The 400 :meth:`check` raises for ``request``, or None if it fits."""
        constraint = request.constraint
        missing: list[tuple[bool, str, str]] = [
            (request.options.logprobs is not None and not self.logprobs, "logprobs", "logprobs"),
            (request.options.n > 1 and not self.n, "n", "n > 1"),
            (
                constraint is not None and constraint.kind == "grammar" and not self.grammar,
                constraint.param if constraint is not None else "",
                "a grammar",
            ),
            (
                constraint is not None and constraint.kind != "grammar" and not self.json_schema,
                constraint.param if constraint is not None else "",
                "JSON output",
            ),
            (
                isinstance(request.prompt, tuple) and self.input == "messages",
                "prompt",
                "a prompt of token ids",
            ),
        ]
        for lacking, param, what in missing:
            if lacking:
                return InvalidRequestError(
                    f"{param}: {what} is not supported by this model's backend",
                    param=param,
                    code="unsupported",
                )
        return None


@dataclass(frozen=True, slots=True)
class Readiness:
    """Whether the backend can take requests now, and if not, why (shown by ``/readyz``)."""

    ready: bool
    reason: str | None = None


class RequestBackend(ABC):
    """A model served by an engine that schedules itself.

    The constructor takes a :class:`RequestBackendSpec` and must not block; :meth:`start`
    loads or connects. Every coroutine runs on the server's event loop: blocking work belongs
    in the backend's own threads or processes.
    """

    #: What this backend takes; see :class:`RequestBackendCapabilities`.
    capabilities: RequestBackendCapabilities = RequestBackendCapabilities()
    #: The pydantic model of this plugin's ``options`` (see
    #: :mod:`inferflux_core.contracts.options`), or None to take them unchecked.
    options_model: ClassVar[type[BaseModel] | None] = None

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Load the model or connect to the engine; raise to mark the model failed."""

    @abstractmethod
    def generate(self, request: InferenceRequest) -> AsyncIterator[InferenceEvent]:
        """Generate ``request``: yield its events in order, each choice ending with a
        ``Finish``, then one final ``UsageReport``.

        A request the backend refuses raises an ``InferfluxError`` (a 4xx for the client's
        mistakes, 503 for an engine that cannot serve) before the first event. Closing the
        iterator early (the client went away) must stop the work, as :meth:`abort` does.
        """

    @abstractmethod
    async def abort(self, request_id: str) -> None:
        """Stop request ``request_id`` and free what it holds; unknown ids are ignored.

        Its :meth:`generate` stream then ends soon, still in shape: a ``Finish`` (reason
        ``cancelled``) for each choice not finished yet, then the final ``UsageReport``.
        """

    async def readiness(self) -> Readiness:
        """Whether requests can be sent now (default: ready once started)."""
        return Readiness(True)

    def failure(self) -> str | None:
        """Why the backend can no longer serve at all (its engine died), or None.

        Once it answers, the engine marks the model failed with that reason: ``/readyz``
        names it and every request is a 503 at once. Raising
        :class:`~inferflux_core.errors.FatalBackendError` from :meth:`generate` (or ending a
        choice with one) does the same.
        """
        return None

    def prometheus_collectors(self) -> Sequence[Collector]:
        """Prometheus collectors of the backend's own metrics (vLLM's ``vllm:*``), exported
        on the engine's ``/metrics`` as they are; collected once each, even when several
        models return the same collector."""
        return ()

    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` (needed when ``capabilities.input == "tokens"``)."""
        raise NotImplementedError(f"{type(self).__name__} does not tokenize")

    def chat_template(self) -> str | None:
        """The model's chat template (needed when ``capabilities.input == "tokens"``)."""
        return None

    async def embed(self, inputs: Sequence[str]) -> list[list[float]]:
        """One embedding per input (when ``capabilities.embeddings``)."""
        raise NotImplementedError(f"{type(self).__name__} does not embed")

    def metrics(self) -> Mapping[str, float]:
        """Gauges and counters the backend reports, by vLLM's metric names where they mean
        the same (``num_requests_running``, ``num_requests_waiting``,
        ``kv_cache_usage_perc``, ...); the engine exports them under its own prefix."""
        return {}

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release the engine, its processes and connections."""
