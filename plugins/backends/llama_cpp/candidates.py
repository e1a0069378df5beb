"""The vocabulary's candidates as one reusable ``llama_token_data`` array, and the sampler
chain's pick from them: what the grammar (GBNF) and llguidance samplers share."""

from __future__ import annotations

import ctypes
from types import ModuleType
from typing import Any

from inferflux_core.errors import BackendError


class Candidates:
    """One ``llama_token_data`` per vocabulary token, filled from a decode's logits row."""

    def __init__(self, llama: ModuleType, n_vocab: int) -> None:
        import numpy as np  # llama-cpp-python's dependency: the plugin loads without either

        self.np = np
        self._llama = llama
        self.n_vocab = n_vocab
        self._candidates = (llama.llama_token_data * n_vocab)()
        fields = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])
        self._view = np.frombuffer(self._candidates, dtype=fields)
        self._ids = np.arange(n_vocab, dtype=np.int32)

    def logits(self, ctx: Any, index: int) -> Any:
        """Row ``index`` of the last decode's logits, as a numpy view (no copy)."""
        row = self._llama.llama_get_logits_ith(ctx, index)
        return self.np.ctypeslib.as_array(row, (self.n_vocab,))

    def pick(self, chain: Any, logits: Any, *, grammar: Any = None, forbidden: Any = None) -> int:
        """The chain's pick from ``logits``: with the ``forbidden`` tokens (a boolean mask)
        at -inf, and ``grammar`` (a llama.cpp sampler) applied before the chain, if given."""
        llama, view = self._llama, self._view
        view["id"] = self._ids
        view["logit"] = logits
        view["p"] = 0.0
        if forbidden is not None:
            view["logit"][forbidden] = -self.np.inf
        array = llama.llama_token_data_array(self._candidates, self.n_vocab, -1, False)
        if grammar is not None:
            llama.llama_sampler_apply(grammar, ctypes.byref(array))
        llama.llama_sampler_apply(chain, ctypes.byref(array))
        if not 0 <= array.selected < array.size:
            raise BackendError("the sampler chain selected no token")
        return int(array.data[array.selected].id)
