"""Where one engine step's time goes: llama_decode, sampling, and everything else in Python.

Drives the engine in-process (no HTTP) with N concurrent greedy requests that ignore EOS and
splits the step loop's wall time into the C calls (``llama_decode``, ``llama_sampler_sample``)
and the rest (batch building, scheduling, detokenizing, stop checks, event delivery).

    python benchmarks/step_profile.py --streams 8 --tokens 128
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from typing import Any

from inferflux_core.config import ModelConfig, Settings
from inferflux_core.contracts import SamplingParams
from inferflux_core.engine import Engine, GenerationRequest

MODEL = "smollm2-135m-instruct"
CONTEXT_LENGTH = 2048


class Timer:
    """Accumulates the time spent in wrapped calls."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0

    def wrap(self, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args)
            finally:
                self.seconds += time.perf_counter() - started
                self.calls += 1

        return timed


async def _generate(engine: Engine, prompt: list[int], tokens: int, index: int) -> int:
    request = GenerationRequest(
        prompt_tokens=prompt,
        max_tokens=tokens,
        sampling=SamplingParams(temperature=0.0),
        ignore_eos=True,
        request_id=f"profile-{index}",
    )
    count = 0
    async for event in engine.submit(MODEL, request):
        count += len(event.token_ids)
    return count


def profile(streams: int, tokens: int) -> dict[str, float]:
    """Run ``streams`` requests of ``tokens`` tokens together; return the time split."""
    engine = Engine(
        Settings(
            models=[
                ModelConfig(
                    name=MODEL, max_sequences=max(streams, 1), context_length=CONTEXT_LENGTH
                )
            ]
        )
    )
    engine.load()
    try:
        model = engine.model(MODEL)
        backend: Any = model.backend
        runner: Any = model.runner
        decode, sample, step = Timer(), Timer(), Timer()
        backend._decode_fn = decode.wrap(backend._decode_fn)
        backend._sample_fn = sample.wrap(backend._sample_fn)
        runner.run_step = step.wrap(runner.run_step)
        prompts = [model.tokenize_prompt(f"Story {i}: once upon a time,") for i in range(streams)]

        async def run_all() -> int:
            counts = await asyncio.gather(
                *(_generate(engine, p, tokens, i) for i, p in enumerate(prompts))
            )
            return sum(counts)

        asyncio.run(_generate(engine, prompts[0], 8, -1))  # warm-up
        decode.seconds = sample.seconds = step.seconds = 0.0
        decode.calls = sample.calls = step.calls = 0
        started = time.perf_counter()
        generated = asyncio.run(run_all())
        wall = time.perf_counter() - started
    finally:
        engine.unload()
    python = step.seconds - decode.seconds - sample.seconds
    return {
        "streams": streams,
        "tok/s": generated / wall,
        "steps": step.calls,
        "step ms": 1000 * step.seconds / step.calls,
        "decode ms": 1000 * decode.seconds / step.calls,
        "sample ms": 1000 * sample.seconds / step.calls,
        "python ms": 1000 * python / step.calls,
        "outside steps ms": 1000 * (wall - step.seconds) / step.calls,
    }


def main() -> None:
    """Print one row per stream count."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", default="1,8", help="comma-separated stream counts")
    parser.add_argument("--tokens", type=int, default=128)
    args = parser.parse_args()
    rows = [profile(int(n), args.tokens) for n in args.streams.split(",")]
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        cells = [f"{row[c]:.2f}" if isinstance(row[c], float) else str(row[c]) for c in columns]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
