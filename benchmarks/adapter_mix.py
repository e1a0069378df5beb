"""What mixing LoRA adapters costs: 8 streams all on the base model vs half base, half adapter.

llama.cpp applies an adapter to a whole context, so inferflux never batches sequences of two
adapters into one step: with both running, the continuous scheduler alternates steps between
them (each step feeds half the streams) and llama.cpp rebuilds its compute graph at each
switch. The script loads the default model with a small random adapter (written with the
``gguf`` package, as the tests do) in one engine, no HTTP, and times ``--streams`` greedy
generations of ``--tokens`` tokens each (EOS ignored) in three mixes: all base, half and
half, all adapter. It prints aggregate generated tokens per second for each.

    python benchmarks/adapter_mix.py [--streams 8] [--tokens 64] [--repeat 2]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from inferflux_core.config import AdapterConfig, ModelConfig, SchedulerConfig, Settings
from inferflux_core.contracts import SamplingParams
from inferflux_core.engine import Engine, GenerationRequest
from inferflux_core.sources import find_default_model_path
from inferflux_core.testing.lora import write_test_lora

MODEL = "bench"
ADAPTER = "noisy"
PROMPT = "Write a long story about a lighthouse keeper and the ships she saw."


async def _generate(engine: Engine, request: GenerationRequest) -> int:
    n = 0
    async for event in engine.submit(MODEL, request):
        n += len(event.token_ids)
    return n


def timed_mix(engine: Engine, adapters: list[str | None], n_tokens: int) -> float:
    """Aggregate tok/s of one stream per entry of ``adapters`` (None: the base model)."""
    prompt = engine.model(MODEL).tokenize_prompt(PROMPT)

    async def run() -> int:
        requests = [
            GenerationRequest(
                prompt_tokens=prompt,
                max_tokens=n_tokens,
                sampling=SamplingParams(temperature=0.0),
                ignore_eos=True,
                adapter=adapter,
            )
            for adapter in adapters
        ]
        return sum(await asyncio.gather(*(_generate(engine, r) for r in requests)))

    started = time.perf_counter()
    generated = asyncio.run(run())
    return generated / (time.perf_counter() - started)


def main() -> None:
    """Load the model and adapter once, then time each mix ``--repeat`` times (best kept)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        lora = write_test_lora(find_default_model_path(), Path(directory) / "noisy.gguf")
        model = ModelConfig(
            name=MODEL,
            context_length=1024,
            max_sequences=args.streams,
            adapters=[AdapterConfig(name=ADAPTER, source=str(lora))],
        )
        # No prefix reuse: every stream prefills its prompt, in every mix alike.
        settings = Settings(models=[model], scheduler=SchedulerConfig(prefix_reuse=False))
        engine = Engine(settings)
        engine.load()
        try:
            half = args.streams // 2
            mixes: dict[str, list[str | None]] = {
                "all base": [None] * args.streams,
                "half base, half adapter": [None] * half + [ADAPTER] * (args.streams - half),
                "all adapter": [ADAPTER] * args.streams,
            }
            timed_mix(engine, [None], 8)  # warm up
            print(f"{args.streams} streams x {args.tokens} tokens, best of {args.repeat}")
            for name, adapters in mixes.items():
                best = max(timed_mix(engine, adapters, args.tokens) for _ in range(args.repeat))
                print(f"  {name:<24} {best:7.1f} tok/s")
        finally:
            engine.unload()


if __name__ == "__main__":
    main()
