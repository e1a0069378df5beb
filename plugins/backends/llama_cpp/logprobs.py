"""Log-probabilities of sampled tokens, from the logits row llama.cpp left for a sequence.

Computed only for sequences that ask: a log-softmax over the vocabulary with numpy and an
``argpartition`` for the top alternatives, a few tens of microseconds for a 50k vocabulary.
Sampling itself stays in llama.cpp's sampler chain; these are the raw logits' probabilities,
as vLLM reports them by default.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from inferflux_core.contracts import TokenLogprob


class LogprobReader:
    """Turns row ``index`` of the last ``llama_decode``'s logits into a :class:`TokenLogprob`."""

    def __init__(self, llama: ModuleType, n_vocab: int) -> None:
        import numpy as np  # llama-cpp-python's dependency: the plugin loads without either

        self._np = np
        self._llama = llama
        self._n_vocab = n_vocab

    def read(self, ctx: Any, index: int, token: int, n_top: int) -> TokenLogprob:
        """``token``'s log-probability at row ``index`` and the ``n_top`` most likely tokens."""
        np = self._np
        row = self._llama.llama_get_logits_ith(ctx, index)
        logits = np.ctypeslib.as_array(row, (self._n_vocab,)).astype(np.float64)
        peak = logits.max()
        log_total = peak + np.log(np.exp(logits - peak).sum())
        top: tuple[tuple[int, float], ...] = ()
        if n_top > 0:
            n_top = min(n_top, self._n_vocab)
            best = np.argpartition(-logits, n_top - 1)[:n_top]
            best = best[np.argsort(-logits[best], kind="stable")]
            top = tuple((int(t), float(logits[t] - log_total)) for t in best)
        return TokenLogprob(token, float(logits[token] - log_total), top)
