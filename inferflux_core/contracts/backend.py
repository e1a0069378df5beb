"""The contract a step-level backend implements.

A step-level backend owns one loaded model on one device. inferflux's engine drives it one
batch step at a time: it opens a KV sequence per request, feeds chunks of tokens for several
sequences in one call to :meth:`StepBackend.decode`, receives one sampled token for every chunk
that asked for one, and frees the sequence when the request ends. Continuous batching, chunked
prefill, stop strings and cancellation are the engine's job, so every step-level backend gets
them for free.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel

from inferflux_core.contracts.device import DeviceInfo
from inferflux_core.contracts.embedding import EmbeddingInfo
from inferflux_core.errors import InvalidRequestError


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """Per-sequence sampling settings, applied inside the backend's sampler.

    ``temperature <= 0`` means greedy decoding. ``top_k == 0``, ``top_p == 1`` and
    ``min_p == 0`` disable those filters. ``seed`` makes a sampled sequence reproducible.
    ``grammar`` (GBNF text, start rule ``root``) limits sampling to tokens the grammar allows;
    the sequence may only end once the grammar is complete. ``llguidance`` does the same with
    an llguidance grammar (its JSON text, see :mod:`inferflux_core.structured.guidance`),
    only for backends with ``supports_llguidance``. ``logprobs`` (only asked of
    backends with ``supports_logprobs``) asks for each sampled token's log-probability and
    the ``logprobs`` most likely alternatives (0: the sampled token's only), see
    :meth:`StepBackend.take_logprobs`.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    penalty_last_n: int = 64
    logit_bias: Mapping[int, float] | None = None
    grammar: str | None = None
    logprobs: int | None = None
    llguidance: str | None = None

    @property
    def greedy(self) -> bool:
        """True when the sampler picks the most likely token."""
        return self.temperature <= 0.0


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """A sampled token's log-probability and the most likely tokens at its position.

    Log-probabilities are the log-softmax of the model's raw logits (before logit bias,
    penalties, temperature or any filter); ``top`` holds ``(token, logprob)`` pairs, most
    likely first.
    """

    token: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True, slots=True)
class SequenceChunk:
    """Tokens to feed one KV sequence in one decode step.

    A prefill is a chunk of prompt tokens; a decode step is a chunk holding the last sampled
    token. ``sample`` asks the backend to sample the next token after the chunk's last token.

    ``draft > 0`` (only sent to backends with ``supports_speculation``) marks a decode step
    ``(last_sampled, d1, ..., dk)`` whose last ``draft`` tokens are a proposed continuation to
    verify: the backend samples after ``last_sampled`` (t0); while the token it sampled equals
    the next draft token it samples after that one too, and stops at the first mismatch or
    after ``dk``. See :meth:`StepBackend.take_accepted`.
    """

    seq_id: int
    tokens: Sequence[int]
    sample: bool = True
    draft: int = 0


@dataclass(frozen=True, slots=True)
class BackendSpec:
    """What a backend factory receives to load one model."""

    model_name: str
    model_path: Path
    device: DeviceInfo
    context_length: int
    max_sequences: int
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """Facts about a loaded model the engine and the API need.

    ``context_length`` is the most tokens (prompt + output) one sequence may hold;
    ``kv_capacity`` the KV cells all sequences together may hold.
    """

    context_length: int
    kv_capacity: int
    vocab_size: int
    chat_template: str | None
    bos_token: str
    eos_token: str
    add_bos: bool
    metadata: Mapping[str, str] = field(default_factory=dict)
    #: Fill-in-the-middle tokens ``(prefix, suffix, middle)``, or None if the model has none.
    fim_tokens: tuple[int, int, int] | None = None


class StepBackend(ABC):
    """A model the engine decodes one batch step at a time.

    Implement these methods; the constructor takes a :class:`BackendSpec` and loads the model.
    Every method is called from the engine's single step thread, never concurrently, except
    :meth:`tokenize` / :meth:`detokenize`, which must be thread-safe (the HTTP layer calls them
    to count and render tokens).
    """

    #: Device kinds (``cpu``, ``cuda``, ``rocm``, ``metal``) this backend runs on.
    supported_devices: tuple[str, ...] = ("cpu",)
    #: The pydantic model of this plugin's ``options`` (see
    #: :mod:`inferflux_core.contracts.options`), or None to take them unchecked.
    options_model: ClassVar[type[BaseModel] | None] = None
    #: True if ``open_sequence(keep_tokens=...)``, :meth:`copy_prefix` and
    #: ``free_sequence(keep_kv=True)`` work: the engine then reuses cached prompt prefixes.
    supports_prefix_reuse: bool = False
    #: True if :meth:`save_sequence` / :meth:`restore_sequence` work: the engine can then
    #: preempt a running sequence and resume it later with the same output.
    supports_preemption: bool = False
    #: Prompt chunks of 2 up to this many tokens minus one compute each token's KV the same
    #: way whatever else the chunk holds (0: no such promise). The engine then also reuses
    #: cached prefixes that end inside such a short last chunk, not only whole
    #: ``prefill_chunk`` s.
    independent_rows_below: int = 0

    #: True if each token's KV depends only on the tokens up to it and on its chunk's class:
    #: *short* (1 to ``independent_rows_below - 1`` tokens; a one-token decode step is one)
    #: or *long* (more), never on the chunk's exact length or where it starts. The engine then
    #: prefills every prompt in a fixed pattern of long and short chunks and reuses cached
    #: prompt KV up to any length where the pattern agrees, with output identical to a fresh
    #: prefill (see :mod:`inferflux_core.engine.row_classes`; generated tokens' KV only with
    #: :meth:`exact_decode_rows`).
    kv_rows_by_chunk_class: bool = False
    #: True if sequences opened with ``SamplingParams.logprobs`` set get their tokens'
    #: log-probabilities from :meth:`take_logprobs`; otherwise the API refuses ``logprobs``.
    supports_logprobs: bool = False
    #: True if :attr:`embedding_info` and :meth:`embed` work: the model then serves
    #: ``/v1/embeddings`` (unless its config says ``embeddings: false``).
    supports_embeddings: bool = False
    #: True if sequences opened with ``SamplingParams.llguidance`` are constrained by it and
    #: :meth:`check_llguidance` works: the engine then enforces JSON schemas with llguidance
    #: instead of a GBNF grammar.
    supports_llguidance: bool = False
    #: True if :meth:`load_adapter` and :meth:`use_adapter` work: the model can then serve
    #: LoRA adapters (``models[].adapters``).
    supports_adapters: bool = False
    #: True if decode chunks with ``SequenceChunk.draft > 0`` are verified as that field
    #: says, and :meth:`take_accepted` works: the engine then drafts tokens (speculative
    #: decoding) for greedy sequences whose sampler keeps no state. The engine keeps a draft
    #: chunk shorter than ``independent_rows_below`` when that is set, so a chunk computes
    #: every position as plain decoding would.
    supports_speculation: bool = False

    @classmethod
    def device_problem(cls, device: DeviceInfo) -> str | None:
        """Why this backend cannot serve a model on ``device`` as installed, or None if it can.

        ``backend: auto`` asks this before constructing anything, so it must be cheap and must
        not raise; the answer is a sentence an operator can act on (how to install what is
        missing). The default checks :attr:`supported_devices`.
        """
        if device.kind in cls.supported_devices:
            return None
        return f"it runs on {', '.join(cls.supported_devices)}, not on {device.kind}"

    @property
    @abstractmethod
    def info(self) -> ModelInfo:
        """Context length, vocabulary size, chat template and special tokens of the model."""

    @abstractmethod
    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        """Turn text into token ids; ``add_special`` adds BOS where the model wants one.

        Special-token text (``<|im_start|>``) in ``text`` is parsed as the special token.
        """

    @abstractmethod
    def detokenize(self, tokens: Sequence[int]) -> str:
        """Turn token ids back into text (special tokens rendered as text)."""

    @abstractmethod
    def token_bytes(self, token: int) -> bytes:
        """The raw bytes one token contributes to the output (may be part of a UTF-8 char)."""

    @abstractmethod
    def is_end_of_generation(self, token: int) -> bool:
        """True for EOS / end-of-turn tokens that end a sequence."""

    @abstractmethod
    def open_sequence(self, seq_id: int, params: SamplingParams, *, keep_tokens: int = 0) -> None:
        """Prepare KV sequence ``seq_id`` and its sampler.

        ``seq_id`` is in ``range(max_sequences)`` and not open already. The KV is emptied,
        except that with ``keep_tokens > 0`` (only asked of backends that support prefix reuse)
        the first ``keep_tokens`` tokens left there by ``free_sequence(keep_kv=True)`` stay and
        the next chunk continues after them.
        """

    @abstractmethod
    def decode(self, chunks: Sequence[SequenceChunk]) -> dict[int, int]:
        """Run one forward pass over all chunks in a single batch.

        Appends each chunk's tokens to its sequence's KV, then samples one token for each chunk
        with ``sample=True`` using that sequence's sampler. Returns ``{seq_id: token}``.
        Raises :class:`inferflux_core.errors.BackendError` if the step fails; the engine then
        fails the affected requests (503) and frees their sequences. Raise
        :class:`~inferflux_core.errors.FatalBackendError` if the backend cannot go on: the
        engine then marks the model failed (as it does after repeated failed steps). When the
        step ran but some sequences cannot go on (their grammar failed), raise
        :class:`~inferflux_core.errors.SequencesFailedError` with the others' tokens: only
        those sequences' requests fail (400), and nothing is rolled back.
        """

    @abstractmethod
    def free_sequence(self, seq_id: int, *, keep_kv: bool = False) -> None:
        """Drop the sequence's sampler, and its KV unless ``keep_kv``; ``seq_id`` may be reopened.

        ``keep_kv`` is only asked of backends that support prefix reuse: the KV stays for a
        later ``open_sequence(..., keep_tokens=n)`` or :meth:`copy_prefix` from this seq_id.
        """

    def take_logprobs(self) -> Mapping[int, TokenLogprob]:
        """``{seq_id: TokenLogprob}`` for the tokens the last :meth:`decode` sampled.

        Only sequences opened with ``params.logprobs`` set appear; the engine calls this after
        a decode that sampled such a sequence. Only backends with ``supports_logprobs``
        implement it.
        """
        return {}

    def exact_decode_rows(self) -> bool:
        """Make one-token decode steps compute each token's KV as a short prompt chunk does,
        from now on, even where that costs speed; True if the backend now does.

        Only asked of backends with :attr:`kv_rows_by_chunk_class`, when the engine reuses
        generated tokens' KV exactly (``scheduler.reuse_generated: exact``). The default
        cannot (the engine then does not reuse generated tokens).
        """
        return False

    def take_accepted(self) -> Mapping[int, int]:
        """``{seq_id: j}``: how many draft tokens of each draft chunk the last :meth:`decode`
        accepted (``0 <= j <= draft``).

        ``decode`` returned the token sampled after the last accepted one (``t_j``); the KV
        holds ``last_sampled, d1..dj`` and the rejected drafts' KV is gone, so the next chunk
        continues after ``dj``. Only backends with ``supports_speculation`` implement it.
        """
        return {}

    def check_grammar(self, grammar: str) -> None:
        """Raise :class:`~inferflux_core.errors.InvalidRequestError` unless ``grammar`` (GBNF)
        can constrain a sequence. Thread-safe: the HTTP layer calls it before submitting.

        The default refuses every grammar: a backend that supports them overrides it.
        """
        raise InvalidRequestError(
            f"{type(self).__name__} cannot constrain output with a grammar",
            param="response_format",
            code="unsupported",
        )

    def check_llguidance(self, grammar: str) -> None:
        """Raise :class:`~inferflux_core.errors.InvalidRequestError` unless the llguidance
        ``grammar`` can constrain a sequence on this model. Thread-safe, like
        :meth:`check_grammar`; only asked of backends with ``supports_llguidance``.
        """
        raise InvalidRequestError(
            f"{type(self).__name__} cannot constrain output with llguidance",
            param="response_format",
            code="unsupported",
        )

    def copy_prefix(self, src_seq_id: int, dst_seq_id: int, n_tokens: int) -> None:
        """Give the open, empty ``dst_seq_id`` the first ``n_tokens`` of ``src_seq_id``'s KV.

        The source may be open or freed with ``keep_kv=True``; it is left unchanged. The next
        chunk of ``dst_seq_id`` continues at position ``n_tokens``.
        """
        raise NotImplementedError(f"{type(self).__name__} does not support prefix reuse")

    def save_sequence(self, seq_id: int) -> object:
        """Take an open sequence out of the KV cache: its KV, sampler state and position.

        Returns an opaque value for :meth:`restore_sequence`; ``seq_id`` is free afterwards.
        """
        raise NotImplementedError(f"{type(self).__name__} does not support preemption")

    def restore_sequence(self, seq_id: int, saved: object) -> None:
        """Put a saved sequence back under the free ``seq_id``; it continues where it stopped."""
        raise NotImplementedError(f"{type(self).__name__} does not support preemption")

    @property
    def embedding_info(self) -> EmbeddingInfo:
        """Vector size and batching limits of :meth:`embed` (thread-safe, cheap)."""
        raise NotImplementedError(f"{type(self).__name__} does not produce embeddings")

    def embed(self, inputs: Sequence[Sequence[int]]) -> list[list[float]]:
        """One pooled vector per input (token ids), in order; called on the step thread.

        Each input holds 1 to ``embedding_info.max_input_tokens`` tokens. The vectors need
        not be normalized: the engine scales them to unit length. Inputs must not influence
        each other beyond float rounding, however they are batched. A backend splits a call
        larger than its batch limits itself. Raises
        :class:`~inferflux_core.errors.InvalidRequestError` for a request the model cannot
        serve (400) and :class:`~inferflux_core.errors.BackendError` if the pass fails.
        """
        raise NotImplementedError(f"{type(self).__name__} does not produce embeddings")

    def load_adapter(self, name: str, path: Path, scale: float) -> None:
        """Load the LoRA adapter GGUF at ``path`` as ``name``, applied with ``scale``.

        Raises :class:`~inferflux_core.errors.ModelFileError` for a file that is no adapter
        of this model. Called before the first step, or between steps from the step thread.
        """
        raise NotImplementedError(f"{type(self).__name__} does not load adapters")

    def use_adapter(self, name: str | None) -> None:
        """Apply adapter ``name`` (None: none) to every chunk of the next :meth:`decode`s.

        The engine calls it before each step whose sequences run under another adapter than
        the last one; one step never mixes adapters. The default serves the base model only.
        """
        if name is not None:
            raise NotImplementedError(f"{type(self).__name__} does not apply adapters")

    def close(self) -> None:  # noqa: B027 - optional hook with a do-nothing default
        """Release the model. Called once, after the last step."""
