"""LoRA adapters on the real llama.cpp engine: a small adapter GGUF written here with the
``gguf`` package for the default model, served as ``BASE:ADAPTER``."""

from __future__ import annotations

import asyncio
import ctypes
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inferflux_core.config import AdapterConfig, ModelConfig, SchedulerConfig, Settings
from inferflux_core.contracts import SamplingParams
from inferflux_core.engine import Engine, GenerationRequest
from inferflux_core.errors import InvalidRequestError, ModelNotFoundError
from inferflux_core.frontdoors import OpenAIDicts
from inferflux_core.testing.lora import write_test_lora

MODEL = "smollm2-135m-instruct"
ADAPTER = "noisy"
CONTEXT = 512
THREADS = 2
N_TOKENS = 16
#: Options both the engine and the direct reference use, so their kernels are the same.
OPTIONS = {"repack": "off", "threads": THREADS}
PROMPTS = (
    "The capital of France is",
    "Here is a list of three colours:",
    "Once upon a time, in a small village,",
)


@pytest.fixture(scope="module")
def adapter_path(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_test_lora(model_path, tmp_path_factory.mktemp("lora") / "noisy.gguf")


@pytest.fixture(scope="module")
def engine(adapter_path: Path) -> Iterator[Engine]:
    model = ModelConfig(
        name=MODEL,
        context_length=CONTEXT,
        max_sequences=4,
        options=OPTIONS,
        adapters=[AdapterConfig(name=ADAPTER, source=str(adapter_path))],
    )
    engine = Engine(Settings(models=[model], scheduler=SchedulerConfig(prefill_chunk=128)))
    engine.load()
    yield engine
    engine.unload()


def _greedy(adapter: str | None, prompt: list[int]) -> GenerationRequest:
    return GenerationRequest(
        prompt_tokens=prompt,
        max_tokens=N_TOKENS,
        sampling=SamplingParams(temperature=0.0),
        adapter=adapter,
    )


async def _tokens(engine: Engine, request: GenerationRequest) -> list[int]:
    tokens: list[int] = []
    async for event in engine.submit(MODEL, request):
        tokens.extend(event.token_ids)
    return tokens


def _run(engine: Engine, *requests: GenerationRequest) -> list[list[int]]:
    async def all_at_once() -> list[list[int]]:
        return list(await asyncio.gather(*(_tokens(engine, r) for r in requests)))

    return asyncio.run(all_at_once())


def _prompt(engine: Engine, text: str) -> list[int]:
    return engine.model(MODEL).tokenize_prompt(text)


def _direct_greedy(model_path: Path, adapter: Path | None, prompt: list[int]) -> list[int]:
    """The same greedy generation through llama-cpp-python's own API, no inferflux code:
    one context, the adapter set on it, the prompt in one decode, then a token a decode."""
    import llama_cpp as llama

    model_params = llama.llama_model_default_params()
    model_params.use_extra_bufts = False  # the engine's `repack: off`
    model = llama.llama_model_load_from_file(str(model_path).encode(), model_params)
    params = llama.llama_context_default_params()
    params.n_ctx = CONTEXT
    params.n_batch = params.n_ubatch = 512
    params.n_seq_max = 1
    params.n_threads = params.n_threads_batch = THREADS
    ctx = llama.llama_init_from_model(model, params)
    lora = None
    try:
        if adapter is not None:
            lora = llama.llama_adapter_lora_init(model, str(adapter).encode())
            assert lora, "llama.cpp refused the test adapter"
            handles = (llama.llama_adapter_lora_p_ctypes * 1)(lora)
            scales = (ctypes.c_float * 1)(1.0)
            assert llama.llama_set_adapters_lora(ctx, handles, 1, scales) == 0
        vocab = llama.llama_model_get_vocab(model)
        n_vocab = llama.llama_vocab_n_tokens(vocab)
        out: list[int] = []
        feed = list(prompt)
        while len(out) < N_TOKENS:
            array = (llama.llama_token * len(feed))(*feed)
            assert llama.llama_decode(ctx, llama.llama_batch_get_one(array, len(feed))) == 0
            logits = llama.llama_get_logits_ith(ctx, -1)
            token = max(range(n_vocab), key=lambda t: logits[t])
            out.append(token)
            if llama.llama_vocab_is_eog(vocab, token):
                break
            feed = [token]
        return out
    finally:
        llama.llama_free(ctx)
        if lora:
            llama.llama_adapter_lora_free(lora)
        llama.llama_model_free(model)


def test_the_adapter_changes_greedy_output_as_llama_cpp_applies_it(
    engine: Engine, model_path: Path, adapter_path: Path
) -> None:
    prompt = _prompt(engine, PROMPTS[0])
    base, adapted = _run(engine, _greedy(None, prompt)), _run(engine, _greedy(ADAPTER, prompt))
    assert base != adapted
    assert adapted[0] == _direct_greedy(model_path, adapter_path, prompt)
    assert base[0] == _direct_greedy(model_path, None, prompt)


def test_mixed_traffic_gives_each_request_its_output_alone(engine: Engine) -> None:
    prompts = [_prompt(engine, text) for text in PROMPTS]
    requests = [_greedy(ADAPTER if i % 2 else None, p) for i, p in enumerate(prompts * 2)]
    alone = [_run(engine, request)[0] for request in requests]
    together = _run(engine, *(_greedy(r.adapter, r.prompt_tokens) for r in requests))
    assert together == alone
    assert alone[0] != alone[3]  # the same prompt, base then adapter


def test_prefix_reuse_never_crosses_adapters(engine: Engine) -> None:
    runner = engine.model(MODEL).runner
    prompt = _prompt(engine, "A long shared preamble. " * 40 + PROMPTS[1])
    base_first = _run(engine, _greedy(None, prompt))[0]
    # The base prompt's KV is idle now; the adapter must not take it over.
    assert runner.slots.find_prefix(prompt, ADAPTER) is None
    assert runner.slots.find_prefix(prompt, None) is not None
    adapted = _run(engine, _greedy(ADAPTER, prompt))[0]
    assert runner.slots.find_prefix(prompt, ADAPTER) is not None
    assert _run(engine, _greedy(None, prompt))[0] == base_first
    assert _run(engine, _greedy(ADAPTER, prompt))[0] == adapted != base_first


def test_requests_name_the_adapter_by_model_or_field(engine: Engine) -> None:
    dicts = OpenAIDicts(engine)
    body: dict[str, Any] = {
        "messages": [{"role": "user", "content": PROMPTS[2]}],
        "temperature": 0,
        "max_tokens": 12,
    }

    def chat(**extra: Any) -> Any:
        return asyncio.run(dicts.chat({**body, **extra}))

    by_model = chat(model=f"{MODEL}:{ADAPTER}")
    by_field = chat(model=MODEL, adapter=ADAPTER)
    base = chat(model=MODEL)
    text = [r["choices"][0]["message"]["content"] for r in (by_model, by_field, base)]
    assert text[0] == text[1] != text[2]
    assert by_model["model"] == f"{MODEL}:{ADAPTER}"
    with pytest.raises(ModelNotFoundError):
        chat(model=f"{MODEL}:missing")
    with pytest.raises(ModelNotFoundError):
        _run(engine, _greedy("missing", _prompt(engine, PROMPTS[0])))


def test_an_adapter_registered_at_runtime_serves_beside_running_traffic(
    engine: Engine, model_path: Path, tmp_path: Path
) -> None:
    second = write_test_lora(model_path, tmp_path / "second.gguf", seed=1)
    prompt = _prompt(engine, PROMPTS[1])
    base, first = _run(engine, _greedy(None, prompt), _greedy(ADAPTER, prompt))

    async def register_while_serving() -> tuple[list[int], list[int]]:
        running = asyncio.ensure_future(_tokens(engine, _greedy(None, prompt)))
        await engine.add_adapter(MODEL, AdapterConfig(name="second", source=str(second)))
        return await running, await _tokens(engine, _greedy("second", prompt))

    still_base, by_second = asyncio.run(register_while_serving())
    assert still_base == base
    assert by_second not in (base, first)
    for name, source in (("second", second), ("not-an-adapter", model_path)):
        with pytest.raises(InvalidRequestError):
            asyncio.run(engine.add_adapter(MODEL, AdapterConfig(name=name, source=str(source))))
    assert [a.name for a in engine.model(MODEL).config.adapters] == [ADAPTER, "second"]
