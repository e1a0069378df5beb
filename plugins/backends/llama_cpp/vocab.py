"""A model's vocabulary: tokenizing, detokenizing and per-token bytes, safe across threads.

Every call allocates its own buffer, so the HTTP threads can tokenize while the step thread
decodes (llama.cpp's tokenizer only reads the vocabulary).
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from inferflux_core.errors import InvalidRequestError

PIECE_BUFFER = 64


class Vocab:
    """Tokenizer operations over one loaded model's ``llama_vocab``."""

    def __init__(self, llama: ModuleType, vocab: Any) -> None:
        self._llama = llama
        self.handle = vocab
        self._vocab = vocab
        self.size: int = llama.llama_vocab_n_tokens(vocab)
        self._bytes: list[bytes | None] = [None] * self.size
        self._eog: list[bool | None] = [None] * self.size

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        """Token ids of ``text``; special-token text is parsed as the special token."""
        data = text.encode("utf-8")
        capacity = len(data) + 8
        for _ in range(2):
            buffer = (self._llama.llama_token * capacity)()
            n = self._llama.llama_tokenize(
                self._vocab, data, len(data), buffer, capacity, add_special, True
            )
            if n >= 0:
                return buffer[:n]
            capacity = -n
        raise RuntimeError(f"llama_tokenize failed for a text of {len(data)} bytes")

    def detokenize(self, tokens: Sequence[int]) -> str:
        """The text of ``tokens``, special tokens rendered as text."""
        if not tokens:
            return ""
        self.check_tokens(tokens)
        ids = (self._llama.llama_token * len(tokens))(*tokens)
        capacity = max(32, len(tokens) * 8)
        for _ in range(2):
            buffer = ctypes.create_string_buffer(capacity)
            n = self._llama.llama_detokenize(
                self._vocab, ids, len(tokens), buffer, capacity, False, True
            )
            if n >= 0:
                return buffer.raw[:n].decode("utf-8", errors="replace")
            capacity = -n
        raise RuntimeError(f"llama_detokenize failed for {len(tokens)} tokens")

    def token_bytes(self, token: int) -> bytes:
        """The bytes ``token`` contributes to the output (cached per token)."""
        cached = self._bytes[token] if 0 <= token < self.size else None
        if cached is None:
            cached = self.piece(token)
            self._bytes[token] = cached
        return cached

    def check_tokens(self, tokens: Sequence[int]) -> None:
        """Raise InvalidRequestError for an id outside the vocabulary.

        llama.cpp's detokenizer indexes its tables unchecked (an out-of-range id aborts the
        process), so ids from requests are checked here first.
        """
        size = self.size
        for token in tokens:
            if not 0 <= token < size:
                raise InvalidRequestError(
                    f"token id {token} is outside the vocabulary (0..{size - 1})"
                )

    def piece(self, token: int) -> bytes:
        """``llama_token_to_piece`` with special tokens rendered, uncached."""
        self.check_tokens((token,))
        capacity = PIECE_BUFFER
        for _ in range(2):
            buffer = ctypes.create_string_buffer(capacity)
            n = self._llama.llama_token_to_piece(self._vocab, token, buffer, capacity, 0, True)
            if n >= 0:
                return buffer.raw[:n]
            capacity = -n
        raise RuntimeError(f"llama_token_to_piece failed for token {token}")

    def is_end_of_generation(self, token: int) -> bool:
        """True for tokens that end a turn (EOS, EOT, …), cached per token."""
        if not 0 <= token < self.size:
            return False
        known = self._eog[token]
        if known is None:
            known = bool(self._llama.llama_vocab_is_eog(self._vocab, token))
            self._eog[token] = known
        return known

    def special_text(self, token: int) -> str:
        """The text of a special token such as BOS, or "" when the model has none (-1)."""
        if token < 0:
            return ""
        return self.piece(token).decode("utf-8", errors="replace")
