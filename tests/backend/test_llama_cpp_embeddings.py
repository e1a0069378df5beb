"""The llama.cpp backend's embedding context against the real SmolLM2-135M model.

SmolLM2 is a causal model: a token's hidden state depends only on the tokens before it. That
gives independent checks of each pooling: ``cls`` (the first token's state) of any input is
``last`` of its first token alone, and ``mean`` of two tokens is the average of ``last`` of the
one-token and two-token prefixes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import pytest

from inferflux_core.errors import ConfigError, InvalidRequestError
from inferflux_core.gguf_check import read_gguf_header
from inferflux_core.sources import find_default_model_path
from inferflux_plugins.backends.llama_cpp import LlamaCppBackend
from inferflux_plugins.backends.llama_cpp.embedding import (
    POOLING_CLS,
    POOLING_MEAN,
    resolve_pooling,
)
from tests.backend.test_llama_cpp_backend import chat, generate, load

TOLERANCE = 1e-4
BATCH = 32


def close_to(a: Sequence[float], b: Sequence[float], tolerance: float = TOLERANCE) -> bool:
    assert len(a) == len(b)
    return max(abs(x - y) for x, y in zip(a, b, strict=True)) < tolerance


@pytest.fixture(scope="module")
def backends() -> Iterator[dict[str, LlamaCppBackend]]:
    """One backend per pooling, with 32-token batches to reach the limits quickly."""
    loaded = {
        pooling: load(context_length=128, max_sequences=2, batch_size=BATCH, embedding_pooling=p)
        for pooling, p in [("mean", "auto"), ("cls", "cls"), ("last", "last")]
    }
    yield loaded
    for backend in loaded.values():
        backend.close()


def tokens_of(backend: LlamaCppBackend, text: str) -> list[int]:
    return backend.tokenize(text, add_special=True)


def test_embedding_info_reports_the_models_width_and_the_batch(
    backends: dict[str, LlamaCppBackend],
) -> None:
    header = read_gguf_header(find_default_model_path())
    width = header.metadata[f"{header.metadata['general.architecture']}.embedding_length"]
    info = backends["mean"].embedding_info
    assert info.size == width
    assert info.max_input_tokens == info.batch_tokens == BATCH


def test_cls_pooling_is_the_first_tokens_state(backends: dict[str, LlamaCppBackend]) -> None:
    cls, last = backends["cls"], backends["last"]
    tokens = tokens_of(cls, "Hello there, how are you today?")
    [whole] = cls.embed([tokens])
    [first_alone] = last.embed([tokens[:1]])
    assert close_to(whole, first_alone)


def test_mean_pooling_averages_the_prefix_states(backends: dict[str, LlamaCppBackend]) -> None:
    mean, last = backends["mean"], backends["last"]
    tokens = tokens_of(mean, "Good morning")
    assert len(tokens) >= 2
    [pooled] = mean.embed([tokens[:2]])
    one, two = last.embed([tokens[:1], tokens[:2]])
    assert close_to(pooled, [(a + b) / 2 for a, b in zip(one, two, strict=True)])
    assert not close_to(one, two)


def test_inputs_beyond_one_batch_are_split_and_keep_their_order(
    backends: dict[str, LlamaCppBackend],
) -> None:
    backend = backends["mean"]
    texts = [f"Sentence number {i} is about topic {i * 7}." for i in range(6)]
    inputs = [tokens_of(backend, t) for t in texts]
    assert sum(map(len, inputs)) > BATCH  # more than one llama_decode
    together = backend.embed(inputs)
    alone = [backend.embed([tokens])[0] for tokens in inputs]
    assert len(together) == len(inputs)
    for a, b in zip(together, alone, strict=True):
        assert close_to(a, b)
    assert backend.embed(inputs) == together  # deterministic


def test_embedding_leaves_generation_unchanged(backends: dict[str, LlamaCppBackend]) -> None:
    backend = backends["mean"]
    prompt = chat(backend, "What is the capital of France?")
    before = generate(backend, {0: prompt}, n_tokens=8)
    backend.embed([tokens_of(backend, "an unrelated text to embed")])
    after = generate(backend, {0: prompt}, n_tokens=8)
    assert before == after


def test_pooling_none_is_refused_per_request() -> None:
    backend = load(context_length=64, max_sequences=1, batch_size=16, embedding_pooling="none")
    try:
        with pytest.raises(InvalidRequestError) as caught:
            backend.embed([[1, 2, 3]])
        assert caught.value.code == "unsupported"
        assert "'none'" in caught.value.message
    finally:
        backend.close()


def test_auto_pooling_takes_the_ggufs_own_or_mean() -> None:
    header = read_gguf_header(find_default_model_path())
    assert resolve_pooling("auto", header) == POOLING_MEAN  # a chat model declares none
    arch = header.metadata["general.architecture"]
    declared = dataclasses.replace(
        header, metadata={**header.metadata, f"{arch}.pooling_type": POOLING_CLS}
    )
    assert resolve_pooling("auto", declared) == POOLING_CLS
    assert resolve_pooling("mean", declared) == POOLING_MEAN


def test_an_unknown_pooling_option_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        load(context_length=64, max_sequences=1, embedding_pooling="max")
    assert caught.value.param.endswith(".options.embedding_pooling")
