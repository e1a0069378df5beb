"""What the engine takes and gives, for every front door and every backend kind.

A front door (OpenAI chat, completions, Responses, Anthropic Messages, ...) parses its wire
request into an :class:`InferenceRequest` and encodes the :data:`InferenceEvent` stream the
engine yields back into its own wire format, whole or streamed. Nothing here knows a wire
format: there is no JSON shape, no ``choices`` array, no SSE. Guardrails, audit and rate
limits read these events, once, for every front door.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from inferflux_core.errors import InferfluxError

#: A request's ``priority`` lies in ``-MAX_PRIORITY..MAX_PRIORITY`` (a key's policy may cap
#: it lower); a value outside is a 400 from the front door.
MAX_PRIORITY = 1000


def new_request_id(prefix: str = "req") -> str:
    """A unique, unguessable request id."""
    return f"{prefix}-{uuid.uuid4().hex}"


# -- the request ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call the assistant made earlier in a conversation: ``arguments`` is JSON text."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of a conversation, in the roles every chat template knows.

    ``content`` is the message's text (a front door joins text parts; other parts are refused
    by the front door until a backend declares it takes them). ``developer`` is OpenAI's newer
    name for ``system``; templates that know it render it as such. ``tool_calls`` are an
    assistant's earlier calls; ``tool_call_id`` ties a ``tool`` message to its call.
    """

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | None = None
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A function the model may call; ``parameters`` is its arguments' JSON Schema."""

    name: str
    description: str | None = None
    parameters: Mapping[str, Any] | None = None
    strict: bool = False


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """Whether the model must, may or must not call a tool (``function``: ``name`` only)."""

    mode: Literal["auto", "none", "required", "function"] = "auto"
    name: str | None = None


@dataclass(frozen=True, slots=True)
class OutputConstraint:
    """What the output must be: ``json_object`` (any JSON object), ``json_schema`` (valid
    against ``schema``) or ``grammar`` (GBNF text, start rule ``root``).

    ``param`` is where the front door found it in its wire request (``response_format``,
    ``text.format``, ...), so an error about it names what the client sent.
    """

    kind: Literal["json_object", "json_schema", "grammar"]
    schema: Mapping[str, Any] | None = None
    grammar: str | None = None
    param: str = "response_format"


#: The sampling fields a model may give defaults for (``models[].sampling_defaults``, GGUF
#: ``general.sampling.*``) when a request leaves them out.
DEFAULTABLE_SAMPLING = frozenset({"temperature", "top_p", "top_k", "min_p", "repeat_penalty"})


@dataclass(frozen=True, slots=True)
class GenerationOptions:
    """How to sample and when to stop; every value already bounded by the front door.

    ``temperature <= 0`` is greedy; ``top_k == 0``, ``top_p == 1`` and ``min_p == 0`` disable
    those filters. ``max_tokens`` None: up to the model's context. ``logprobs`` None: no
    logprobs; an int: the sampled token's and that many alternatives. ``n`` outputs share the
    prompt; with ``best_of`` that many are generated and the ``n`` likeliest returned.
    ``unset`` names the :data:`DEFAULTABLE_SAMPLING` fields the client left out: the engine
    replaces their values with the model's sampling defaults, where it has any.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: Mapping[int, float] | None = None
    max_tokens: int | None = None
    min_tokens: int = 0
    ignore_eos: bool = False
    stop: tuple[str, ...] = ()
    logprobs: int | None = None
    n: int = 1
    #: Speculative decoding on or off for this request; None: the model's default.
    speculative: bool | None = None
    best_of: int | None = None
    echo: bool = False
    unset: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class InferenceRequest:
    """One generation request, whatever front door it came through.

    Exactly one of ``messages`` (a conversation: the model's chat template renders it) and
    ``prompt`` (raw text or token ids, as completions sends) is set. ``suffix`` asks for
    fill-in-the-middle. ``priority``: higher runs first (already capped by the caller's
    policy). ``deadline``: a ``time.monotonic()`` instant after which the request is failed
    rather than started. ``continue_final_message``: the conversation ends with an assistant
    message the model continues (Anthropic's prefill, vLLM's ``continue_final_message``); the
    output is what follows it.
    rather than started. ``keep_alive``: seconds the model stays loaded after this request
    (Ollama's; negative: forever; None: the model's own).
    """

    model: str
    messages: tuple[ChatMessage, ...] | None = None
    prompt: str | tuple[int, ...] | None = None
    suffix: str | None = None
    options: GenerationOptions = field(default_factory=GenerationOptions)
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: ToolChoice = field(default_factory=ToolChoice)
    parallel_tool_calls: bool = True
    constraint: OutputConstraint | None = None
    priority: int = 0
    deadline: float | None = None
    request_id: str = field(default_factory=new_request_id)
    continue_final_message: bool = False
    keep_alive: float | None = None


# -- the events -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenAlternative:
    """One likely token at a position: its text, its bytes and its log-probability."""

    text: str
    bytes: bytes
    logprob: float


@dataclass(frozen=True, slots=True)
class TextLogprob:
    """A generated token's text, bytes and log-probability, with the likeliest alternatives."""

    text: str
    bytes: bytes
    logprob: float
    top: tuple[TokenAlternative, ...] = ()


@dataclass(frozen=True, slots=True)
class TextDelta:
    """New text of output ``choice``; ``logprobs`` has one entry per token this text holds.

    ``echo``: the text repeats the prompt (``GenerationOptions.echo``), and its ``logprobs``
    entries list the prompt's tokens, whose log-probabilities are not computed (``logprob``
    is 0.0 and there are no alternatives; a front door shows them as null).
    """

    choice: int
    text: str
    logprobs: tuple[TextLogprob, ...] = ()
    echo: bool = False


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """Part of tool call ``call`` (0, 1, ... within ``choice``): the first delta of a call
    carries its ``id`` and ``name``; every delta may carry a fragment of its JSON
    ``arguments``."""

    choice: int
    call: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "cancelled", "error"]


@dataclass(frozen=True, slots=True)
class Finish:
    """Output ``choice`` is complete. With ``reason == "error"``, ``error`` says why (the
    front door renders it in its own error shape). With ``reason == "stop"``,
    ``stop_sequence`` is the stop string that ended the output, when one did and the backend
    knows which (None for an end-of-generation token)."""

    choice: int
    reason: FinishReason
    error: InferfluxError | None = None
    stop_sequence: str | None = None


@dataclass(frozen=True, slots=True)
class UsageReport:
    """Tokens the whole request used so far (every choice): the last one is final.

    ``cached_tokens`` are prompt tokens whose KV was reused rather than computed.
    """

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


#: Everything the engine yields for a request, in order per choice; a request's stream ends
#: after every choice's :class:`Finish` and one final :class:`UsageReport`.
InferenceEvent = TextDelta | ToolCallDelta | Finish | UsageReport
