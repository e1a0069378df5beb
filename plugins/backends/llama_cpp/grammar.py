"""Compiled GBNF grammars, parsed once and cloned for every sequence that uses them.

llama.cpp parses a grammar when a grammar sampler is created; cloning a parsed sampler copies
its rules without parsing again. The cache keeps the most recently used parsed samplers, keyed
by a digest of the grammar and bounded in entries and in grammar bytes. A grammar llama.cpp
cannot parse (it returns NULL) becomes a 400, never a crash; what the parser writes to stderr
about it goes to the log, bounded (``native_log``), and its first line into the error.
:class:`ConstrainedSampler` applies a sequence's grammar around its sampler chain.
"""

from __future__ import annotations

import ctypes
import math
import threading
from types import ModuleType
from typing import Any

from inferflux_core.errors import InvalidRequestError
from inferflux_core.structured.cache import BoundedCache, digest
from inferflux_plugins.backends.llama_cpp.candidates import Candidates
from inferflux_plugins.backends.llama_cpp.native_log import captured_stderr, truncated

ROOT_RULE = b"root"
CACHED_GRAMMARS = 64
#: Most grammar text behind the parsed samplers held, all together (llama.cpp's parsed form
#: is of the same order).
CACHED_GRAMMAR_BYTES = 32 * 1024 * 1024
PARSE_ERROR = "error parsing grammar: "


class GrammarCache:
    """Parsed grammar samplers for one vocabulary, least recently used dropped first.

    Thread-safe: the HTTP layer checks grammars while the step thread clones them. Errors
    name no request field: the caller knows which one the grammar came from.
    """

    def __init__(
        self,
        llama: ModuleType,
        vocab: Any,
        capacity: int = CACHED_GRAMMARS,
        max_bytes: int = CACHED_GRAMMAR_BYTES,
    ) -> None:
        self._llama = llama
        self._vocab = vocab
        self._parsed: BoundedCache[Any] = BoundedCache(
            capacity, max_bytes, on_evict=llama.llama_sampler_free
        )
        self._lock = threading.Lock()

    def check(self, grammar: str) -> None:
        """Parse ``grammar`` (or find it parsed); 400 if llama.cpp refuses it."""
        with self._lock:
            self._parsed_sampler(grammar)

    def new_sampler(self, grammar: str) -> Any:
        """A fresh grammar sampler at the grammar's start; the caller owns it."""
        with self._lock:
            sampler = self._llama.llama_sampler_clone(self._parsed_sampler(grammar))
        if not sampler:
            raise InvalidRequestError("the grammar could not be copied")
        return sampler

    def close(self) -> None:
        """Free every parsed sampler."""
        with self._lock:
            self._parsed.clear()

    def _parsed_sampler(self, grammar: str) -> Any:
        key = digest(grammar)
        sampler = self._parsed.get(key)
        if sampler is not None:
            return sampler
        if not grammar.strip():
            raise InvalidRequestError("the grammar is empty")
        data = grammar.encode("utf-8", errors="replace")
        with captured_stderr() as output:
            sampler = self._llama.llama_sampler_init_grammar(self._vocab, data, ROOT_RULE)
        if not sampler:
            raise InvalidRequestError(
                "llama.cpp could not parse the grammar (" + _parse_error(output.text) + ")"
            )
        self._parsed.put(key, sampler, len(data))
        return sampler


def _parse_error(output: str) -> str:
    """The parser's reason from what it wrote to stderr, short; a generic one if none."""
    for line in output.splitlines():
        if PARSE_ERROR in line:
            return truncated(line.split(PARSE_ERROR, 1)[1].strip(), 200)
    return "undefined rule, syntax error or left recursion"


class ConstrainedSampler:
    """Samples a sequence under a grammar the way llama.cpp's common sampler does.

    Applying a grammar to every candidate costs far more than the rest of the chain, so the
    chain first picks a token from the unconstrained logits; only if the grammar rejects that
    token is the grammar applied to every candidate and the chain run again. Either way the
    token is one the grammar allows, and both samplers then accept it.
    """

    def __init__(self, llama: ModuleType, n_vocab: int) -> None:
        self._llama = llama
        self._candidates = Candidates(llama, n_vocab)
        self._single = (llama.llama_token_data * 1)()

    def sample(self, chain: Any, grammar: Any, ctx: Any, index: int) -> int:
        """The next token of the sequence whose logits are row ``index`` of the last decode."""
        candidates = self._candidates
        logits = candidates.logits(ctx, index)
        token = candidates.pick(chain, logits)
        if not self._allows(grammar, token):
            token = candidates.pick(chain, logits, grammar=grammar)
        self._llama.llama_sampler_accept(grammar, token)
        self._llama.llama_sampler_accept(chain, token)
        return token

    def _allows(self, grammar: Any, token: int) -> bool:
        single = self._single
        single[0].id, single[0].logit, single[0].p = token, 1.0, 0.0
        array = self._llama.llama_token_data_array(single, 1, -1, False)
        self._llama.llama_sampler_apply(grammar, ctypes.byref(array))
        return math.isfinite(array.data[0].logit)
