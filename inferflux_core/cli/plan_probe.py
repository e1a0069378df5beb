"""``inferflux plan --probe``: load the model through the engine and time a short decode.

The model loads as ``inferflux serve`` would load it (backend and device choice, the memory
check, the scheduler), then greedy requests that ignore end-of-generation run one at a time
and then ``sequences`` at once. The rate is decode tokens (all but each request's first) over
the time from the first request's first token to the last request's end: the prompt is short,
so prefill barely counts.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from inferflux_core.config import ModelConfig, Settings
from inferflux_core.contracts.generation import (
    GenerationOptions,
    InferenceRequest,
    TextDelta,
    UsageReport,
)
from inferflux_core.engine import Engine
from inferflux_core.plugins import PluginHost

PROBE_PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


@dataclass(frozen=True, slots=True)
class Timed:
    """One probe request: when its first token came, when it ended, how many it made."""

    first_token: float
    ended: float
    tokens: int


def probe(
    config: ModelConfig, settings: Settings, host: PluginHost, sequences: int, tokens: int
) -> list[dict[str, Any]]:
    """Decode tok/s at 1 sequence and at ``sequences`` (one entry each, JSON-ready)."""
    loaded = config.model_copy(update={"max_sequences": sequences})
    engine = Engine(settings.model_copy(update={"models": [loaded]}), plugins=host)
    return asyncio.run(_measure(engine, loaded.name, sorted({1, sequences}), tokens))


async def _measure(
    engine: Engine, model: str, levels: list[int], tokens: int
) -> list[dict[str, Any]]:
    await engine.start()
    try:
        await _timed(engine, model, 2)  # warm up: the first decode pays one-time costs
        results = []
        for level in levels:
            runs = await asyncio.gather(*(_timed(engine, model, tokens) for _ in range(level)))
            decoded = sum(max(0, run.tokens - 1) for run in runs)
            elapsed = max(run.ended for run in runs) - min(run.first_token for run in runs)
            results.append(
                {
                    "sequences": level,
                    "tokens": decoded,
                    "seconds": round(elapsed, 4),
                    "tokens_per_second": decoded / elapsed if elapsed > 0 else 0.0,
                }
            )
        return results
    finally:
        await engine.stop()


async def _timed(engine: Engine, model: str, tokens: int) -> Timed:
    request = InferenceRequest(
        model,
        prompt=PROBE_PROMPT,
        options=GenerationOptions(temperature=0.0, max_tokens=tokens, ignore_eos=True),
    )
    first: float | None = None
    made = 0
    async for event in engine.generate(request):
        if isinstance(event, TextDelta) and first is None:
            first = time.perf_counter()
        elif isinstance(event, UsageReport):
            made = event.completion_tokens
    ended = time.perf_counter()
    return Timed(first if first is not None else ended, ended, made)
