"""The bigram model as an inferflux step-level backend: every method of the contract."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from inferflux_bigram.counts import EOS, VOCAB_SIZE, BigramCounts
from inferflux_bigram.sampling import pick_token
from inferflux_core.contracts import (
    BackendSpec,
    ModelInfo,
    SamplingParams,
    SequenceChunk,
    StepBackend,
)
from inferflux_core.errors import BackendError, ConfigError, ModelFileError

EOS_TEXT = "<|eos|>"
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


@dataclass(slots=True)
class _Sequence:
    """What a bigram model remembers of a sequence: its last token (the whole "KV cache")."""

    params: SamplingParams
    rng: random.Random
    last: int = EOS


class BigramBackend(StepBackend):
    """A byte-level bigram language model whose "model file" is a UTF-8 text corpus.

    Options (``models[].options``): ``end_marker``, the text that separates documents in
    the corpus (default a blank line); the model learns to emit EOS where documents end.
    """

    supported_devices = ("cpu",)

    def __init__(self, spec: BackendSpec) -> None:
        end_marker = _parse_options(spec.options)
        try:
            text = spec.model_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelFileError(f"cannot read the corpus {spec.model_path}: {exc}") from exc
        try:
            self._counts = BigramCounts.from_text(text, end_marker)
        except ValueError as exc:
            raise ModelFileError(f"corpus {spec.model_path}: {exc}") from exc
        self._max_sequences = spec.max_sequences
        self._sequences: dict[int, _Sequence] = {}
        self._info = ModelInfo(
            context_length=spec.context_length,
            kv_capacity=spec.context_length * spec.max_sequences,
            vocab_size=VOCAB_SIZE,
            chat_template=CHAT_TEMPLATE,
            bos_token="",
            eos_token=EOS_TEXT,
            add_bos=False,
            metadata={"general.name": spec.model_path.name, "general.architecture": "bigram"},
        )

    @property
    def info(self) -> ModelInfo:
        """Context length from the config, 257 tokens, and the built-in chat template."""
        return self._info

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        """The UTF-8 bytes of ``text``, with ``<|eos|>`` parsed as EOS (no BOS: none exists)."""
        tokens: list[int] = []
        for i, part in enumerate(text.split(EOS_TEXT)):
            if i:
                tokens.append(EOS)
            tokens.extend(part.encode("utf-8"))
        return tokens

    def detokenize(self, tokens: Sequence[int]) -> str:
        """The text of ``tokens``; EOS is rendered as ``<|eos|>``."""
        return b"".join(self.token_bytes(t) for t in tokens).decode("utf-8", errors="replace")

    def token_bytes(self, token: int) -> bytes:
        """One byte per byte token (maybe part of a UTF-8 character); EOS's text for EOS."""
        if not 0 <= token < VOCAB_SIZE:
            raise ValueError(f"token {token} is outside the vocabulary of {VOCAB_SIZE}")
        return EOS_TEXT.encode() if token == EOS else bytes((token,))

    def is_end_of_generation(self, token: int) -> bool:
        """Only EOS ends a sequence."""
        return token == EOS

    def open_sequence(self, seq_id: int, params: SamplingParams, *, keep_tokens: int = 0) -> None:
        """Start ``seq_id`` with its own random generator, seeded when ``params.seed`` is set.

        ``keep_tokens`` is never asked of this backend: it leaves ``supports_prefix_reuse``
        False, so the engine does not cache prefixes for it.
        """
        if not 0 <= seq_id < self._max_sequences:
            raise BackendError(f"seq_id {seq_id} is outside 0..{self._max_sequences - 1}")
        if seq_id in self._sequences:
            raise BackendError(f"sequence {seq_id} is already open")
        self._sequences[seq_id] = _Sequence(params, random.Random(params.seed))

    def decode(self, chunks: Sequence[SequenceChunk]) -> dict[int, int]:
        """Remember each chunk's last token; sample the next one where the chunk asks."""
        for chunk in chunks:  # check the whole batch first, so a bad chunk changes nothing
            if chunk.seq_id not in self._sequences or not chunk.tokens:
                raise BackendError(f"sequence {chunk.seq_id} is not open or the chunk is empty")
        sampled: dict[int, int] = {}
        for chunk in chunks:
            sequence = self._sequences[chunk.seq_id]
            sequence.last = chunk.tokens[-1]
            if chunk.sample:
                counts = self._counts.following(sequence.last)
                try:
                    sampled[chunk.seq_id] = pick_token(counts, sequence.params, sequence.rng)
                except ValueError as exc:
                    raise BackendError(f"sequence {chunk.seq_id}: {exc}") from exc
        return sampled

    def free_sequence(self, seq_id: int, *, keep_kv: bool = False) -> None:
        """Forget the sequence; freeing one that is not open does nothing."""
        self._sequences.pop(seq_id, None)

    def close(self) -> None:
        """Nothing to release but memory."""
        self._sequences.clear()


def _parse_options(options: Mapping[str, Any]) -> str:
    """The ``end_marker`` option; any other key is a configuration error."""
    unknown = sorted(set(options) - {"end_marker"})
    if unknown:
        raise ConfigError(
            f"unknown bigram backend option(s): {', '.join(unknown)}", param="options"
        )
    end_marker = options.get("end_marker", "\n\n")
    if not isinstance(end_marker, str):
        raise ConfigError("options.end_marker must be a string", param="options.end_marker")
    return end_marker
