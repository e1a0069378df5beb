"""What the engine takes (a tokenized generation request) and what it gives back (events)."""

from __future__ import annotations

from dataclasses import dataclass, field

from inferflux_core.contracts import SamplingParams, TokenLogprob
from inferflux_core.contracts.generation import new_request_id

__all__ = ["GenerationEvent", "GenerationRequest", "new_request_id"]


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One sequence to generate: prompt tokens, sampling, and when to stop."""

    prompt_tokens: list[int]
    max_tokens: int
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    min_tokens: int = 0
    priority: int = 0
    request_id: str = field(default_factory=new_request_id)
    #: The LoRA adapter to generate under (one the model loaded); None: the base model.
    adapter: str | None = None
    #: For a conversation with assistant turns in its history: how many leading prompt tokens
    #: the first of those turns was generated from (where its generation started); None: no
    #: such turn. Exact prefix reuse computes the prompt after this point as the cache holds
    #: generated tokens (see :mod:`~inferflux_core.engine.row_classes`).
    first_turn_tokens: int | None = None
    #: Whether to draft tokens by prompt lookup (speculative decoding; only greedy sampling
    #: without grammar, logprobs or penalties drafts); None: the model's default.
    speculative: bool | None = None


@dataclass(frozen=True, slots=True)
class GenerationEvent:
    """New output of one sequence since the last event.

    The last event of a sequence has ``finish_reason`` set: ``stop`` (EOS or a stop string),
    ``length`` (``max_tokens`` or the context), ``cancelled`` or ``error`` (then ``error`` holds
    the exception). With ``sampling.logprobs`` set, ``logprobs`` holds one entry per token
    whose text this event releases (text held back for a stop string waits with its tokens;
    tokens of a stop string that is cut off are never reported, nor are end-of-generation
    tokens).
    """

    text: str
    token_ids: tuple[int, ...]
    n_prompt_tokens: int
    n_generated_tokens: int
    finish_reason: str | None = None
    error: Exception | None = None
    #: The stop string that ended the sequence (``finish_reason == "stop"``), if one did.
    stop_sequence: str | None = None
    logprobs: tuple[TokenLogprob, ...] = ()
