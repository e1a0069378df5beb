"""llguidance on llama.cpp: the model's tokenizer, matchers per grammar, masked sampling.

The llguidance tokenizer is built once per model from llama.cpp's vocabulary (about half a
second for the default model), on the first grammar check, which runs on a worker thread.
A grammar's matcher is built when it is checked (llguidance compiles the grammar then, off the
step thread) and kept, bounded, by digest; a sequence gets a copy at its start. Each step
the matcher computes its token mask; the sampler chain picks, and when the mask forbids its
pick, every forbidden token is set to -inf in a copy of the logits and the chain picks again
from what is left; the matcher consumes the token. When
the JSON is complete the mask allows only end-of-generation tokens, so the sequence ends.
"""

from __future__ import annotations

import ctypes
import threading
from types import ModuleType
from typing import Any

from inferflux_core.errors import BackendError, ConfigError
from inferflux_core.structured.cache import BoundedCache, digest
from inferflux_core.structured.guidance import (
    INSTALL_HINT,
    guidance_available,
    parser_limits,
    refused,
)
from inferflux_plugins.backends.llama_cpp.candidates import Candidates

CACHED_MATCHERS = 64
#: Largest token text llguidance is told about (llama.cpp's longest pieces are far shorter).
PIECE_BUFFER = 16 * 1024
#: Grammar text behind the matchers held, all together (a stand-in for their size).
CACHED_MATCHER_BYTES = 32 * 1024 * 1024


class GuidanceMatchers:
    """The llguidance tokenizer of one vocabulary and the matchers of checked grammars.

    Thread-safe: HTTP worker threads check grammars while the step thread copies matchers.
    """

    def __init__(self, llama: ModuleType, vocab: Any, end_tokens: list[int]) -> None:
        self._llama = llama
        self._vocab = vocab
        self._end_tokens = end_tokens
        self._tokenizer: Any = None
        self._matchers: BoundedCache[Any] = BoundedCache(CACHED_MATCHERS, CACHED_MATCHER_BYTES)
        self._lock = threading.Lock()

    def tokenizer(self) -> Any:
        """The llguidance tokenizer of this vocabulary, built on first use."""
        with self._lock:
            if self._tokenizer is None:
                self._tokenizer = build_tokenizer(self._llama, self._vocab, self._end_tokens)
            return self._tokenizer

    def check(self, grammar: str) -> None:
        """Compile ``grammar`` for this vocabulary (or find it compiled); 400 if refused."""
        self._template(grammar)

    def new_matcher(self, grammar: str) -> Any:
        """A fresh matcher at the grammar's start; the caller owns it."""
        return self._template(grammar).deep_copy()

    def _template(self, grammar: str) -> Any:
        key = digest(grammar)
        matcher = self._matchers.get(key)
        if matcher is not None:
            return matcher
        from llguidance import LLMatcher

        matcher = LLMatcher(self.tokenizer(), grammar, log_level=0, limits=parser_limits())
        if not matcher.is_error():
            # Some grammars fail only at their first mask (a $ref cycle matches nothing):
            # computed here, on a copy, off the step thread.
            first = matcher.deep_copy()
            first.compute_bitmask()
            if first.is_error():
                raise refused(None, first.get_error())
        if matcher.is_error():
            raise refused(None, matcher.get_error())
        self._matchers.put(key, matcher, len(grammar))
        return matcher


class GuidedSampler:
    """Samples a sequence under its llguidance matcher, with the sequence's sampler chain."""

    def __init__(self, llama: ModuleType, n_vocab: int) -> None:
        self._llama = llama
        self._candidates = Candidates(llama, n_vocab)
        self._mask = self._candidates.np.zeros(
            (n_vocab + 31) // 32, dtype=self._candidates.np.int32
        )

    def sample(self, chain: Any, matcher: Any, ctx: Any, index: int) -> int:
        """The next token of the sequence whose logits are row ``index`` of the last decode.

        As llama.cpp's common sampler does with grammars, the chain first picks from the
        unmasked logits; only when the mask forbids that token are the forbidden tokens set
        to -inf and the chain run again. Either way the token is one the mask allows.
        """
        candidates, mask = self._candidates, self._mask
        matcher.unsafe_compute_mask_ptr(mask.ctypes.data, mask.nbytes)
        if matcher.is_error():
            raise GuidanceFailure(f"llguidance failed: {matcher.get_error()[:200]}")
        logits = candidates.logits(ctx, index)
        token = candidates.pick(chain, logits)
        if not (int(mask[token >> 5]) >> (token & 31)) & 1:
            np = candidates.np
            allowed = np.unpackbits(mask.view(np.uint8), bitorder="little")[: candidates.n_vocab]
            token = candidates.pick(chain, logits, forbidden=allowed == 0)
        self._llama.llama_sampler_accept(chain, token)
        if not matcher.consume_token(token):
            raise GuidanceFailure(f"llguidance refused token {token}: {matcher.get_error()[:200]}")
        return token


class GuidanceFailure(Exception):
    """A sequence's llguidance matcher cannot go on (a parser limit reached mid-answer, say):
    that sequence fails, the step and the other sequences do not."""


def build_tokenizer(llama: ModuleType, vocab: Any, eos: list[int]) -> Any:
    """llguidance's tokenizer over llama.cpp's vocabulary and tokenizer function.

    What ``llguidance.llamacpp.lltokenizer_from_vocab`` does, with llama.cpp's current
    attribute call (the one it uses warns once per token). Control tokens, and user-defined
    ones that look like them, are marked with a leading 0xFF byte, as llguidance expects.
    """
    from llguidance import LLTokenizer

    buffer = ctypes.create_string_buffer(PIECE_BUFFER + 1)
    special = llama.LLAMA_TOKEN_ATTR_CONTROL
    user = llama.LLAMA_TOKEN_ATTR_USER_DEFINED
    tokens: list[bytes] = []
    for token in range(llama.llama_vocab_n_tokens(vocab)):
        n = llama.llama_token_to_piece(vocab, token, buffer, PIECE_BUFFER, 0, True)
        if n < 0:
            raise BackendError(f"token {token} is longer than {PIECE_BUFFER} bytes")
        piece = bytes(buffer[:n])
        attr = llama.llama_vocab_get_attr(vocab, token)
        if attr & special or (attr & user and piece.startswith(b"<") and piece.endswith(b">")):
            piece = b"\xff" + piece
        tokens.append(piece)
    tokenize = ctypes.cast(llama.llama_cpp._lib.llama_tokenize, ctypes.c_void_p).value
    return LLTokenizer.from_llamacpp(  # type: ignore[attr-defined]
        tokens=tokens, vocab_ptr=vocab, tokenize_fptr=tokenize, eos_token=eos, slices=None
    )


def end_tokens(llama: ModuleType, vocab: Any) -> list[int]:
    """The vocabulary's EOS and EOT tokens (those it has), for the matcher to end with."""
    tokens = [llama.llama_vocab_eos(vocab), llama.llama_vocab_eot(vocab)]
    return sorted({token for token in tokens if token >= 0})


def use_llguidance(setting: str) -> bool:
    """Whether the ``structured_output`` option picks llguidance (``auto``: if installed);
    ConfigError for ``llguidance`` when the package is missing."""
    if setting == "gbnf":
        return False
    if guidance_available():
        return True
    if setting == "llguidance":
        raise ConfigError(
            f"structured_output: llguidance is not installed ({INSTALL_HINT})",
            param="structured_output",
        )
    return False
