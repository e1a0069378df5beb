"""Building a sequence's llama.cpp sampler chain from its SamplingParams.

The order follows llama.cpp's common sampler: logit bias, penalties, then either greedy or
top-k → top-p → min-p → temperature → a seeded draw. A grammar is not part of the chain: it is
applied before it, and only when needed (see ``grammar.ConstrainedSampler``). Penalties see only the
tokens the chain itself sampled (prompt tokens are not fed to it).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from inferflux_core.contracts import SamplingParams
from inferflux_core.errors import InvalidRequestError

SEED_MASK = 0xFFFFFFFF


def penalties_active(params: SamplingParams) -> bool:
    """True when any penalty changes the logits."""
    return params.penalty_last_n != 0 and (
        params.repeat_penalty != 1.0
        or params.frequency_penalty != 0.0
        or params.presence_penalty != 0.0
    )


def draw_seed(params: SamplingParams) -> int:
    """The 32-bit seed for the final draw: the requested one, else a random one.

    llama.cpp reads 0xFFFFFFFF (``LLAMA_DEFAULT_SEED``) as "pick a random seed".
    """
    if params.seed is None:
        return random.getrandbits(32)
    return params.seed & SEED_MASK


def build_sampler_chain(llama: ModuleType, n_vocab: int, n_ctx: int, params: SamplingParams) -> Any:
    """A new sampler chain for ``params``; the caller frees it with ``llama_sampler_free``.

    ``params.grammar`` is left out: the backend applies the grammar around the chain.
    """
    chain = llama.llama_sampler_chain_init(llama.llama_sampler_chain_default_params())
    try:
        for sampler in _samplers(llama, n_vocab, n_ctx, params):
            llama.llama_sampler_chain_add(chain, sampler)
    except BaseException:
        llama.llama_sampler_free(chain)
        raise
    return chain


def _samplers(llama: ModuleType, n_vocab: int, n_ctx: int, params: SamplingParams) -> Iterator[Any]:
    """Create the chain's samplers one at a time, so each is owned by the chain at once."""
    if params.logit_bias:
        yield _logit_bias(llama, n_vocab, params.logit_bias)
    if penalties_active(params):
        last_n = n_ctx if params.penalty_last_n < 0 else params.penalty_last_n
        yield llama.llama_sampler_init_penalties(
            n_vocab,
            last_n,
            params.repeat_penalty,
            params.frequency_penalty,
            params.presence_penalty,
        )
    if params.greedy:
        yield llama.llama_sampler_init_greedy()
        return
    if params.top_k > 0:
        yield llama.llama_sampler_init_top_k(params.top_k)
    if params.top_p < 1.0:
        yield llama.llama_sampler_init_top_p(params.top_p, 1)
    if params.min_p > 0.0:
        yield llama.llama_sampler_init_min_p(params.min_p, 1)
    yield llama.llama_sampler_init_temp(params.temperature)
    yield llama.llama_sampler_init_dist(draw_seed(params))


def _logit_bias(llama: ModuleType, n_vocab: int, bias: Any) -> Any:
    items = list(bias.items())
    for token, _ in items:
        if not 0 <= int(token) < n_vocab:
            raise InvalidRequestError(
                f"logit_bias token {token} is outside the vocabulary (0..{n_vocab - 1})",
                param="logit_bias",
            )
    entries = (llama.llama_logit_bias * len(items))(
        *(llama.llama_logit_bias(int(token), float(value)) for token, value in items)
    )
    return llama.llama_sampler_init_logit_bias(n_vocab, len(items), entries)
