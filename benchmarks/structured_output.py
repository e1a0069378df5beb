"""Decode speed with and without a JSON Schema enforced by llama.cpp's grammar sampler.

One in-process engine on the default model; each mode runs the same greedy chat requests one
at a time and reports generated tokens per second (the grammar is applied to every candidate
token at every step, so this measures its cost per token).

    python benchmarks/structured_output.py [--requests 3] [--tokens 200]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from inferflux_core.config import ModelConfig, Settings
from inferflux_core.engine import Engine
from inferflux_core.frontdoors import OpenAIDicts

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "hobbies": {
            "type": "array",
            "maxItems": 8,
            "items": {
                "type": "object",
                "properties": {
                    "title": {"type": "string", "maxLength": 40},
                    "hours": {"type": "number", "minimum": 0, "maximum": 100},
                },
                "required": ["title", "hours"],
            },
        },
    },
    "required": ["name", "age", "hobbies"],
}
MODES: dict[str, dict[str, Any] | None] = {
    "text": None,
    "json_object": {"type": "json_object"},
    "json_schema": {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA}},
}


async def run_mode(engine: Engine, response_format: dict[str, Any] | None, args: Any) -> float:
    """Generated tokens per second over ``args.requests`` sequential requests."""
    tokens = 0
    elapsed = 0.0
    for i in range(args.requests):
        body: dict[str, Any] = {
            "model": "smollm2-135m-instruct",
            "messages": [{"role": "user", "content": f"Describe person number {i} as JSON."}],
            "temperature": 0,
            "max_tokens": args.tokens,
        }
        if response_format is not None:
            body["response_format"] = response_format
        started = time.perf_counter()
        reply = await OpenAIDicts(engine).chat(body)
        elapsed += time.perf_counter() - started
        tokens += reply["usage"]["completion_tokens"]
    return tokens / elapsed


async def main() -> None:
    """Run every mode and print one line each."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=200)
    args = parser.parse_args()
    engine = Engine(Settings(models=[ModelConfig(max_sequences=1)]))
    await engine.start()
    try:
        await run_mode(engine, MODES["json_schema"], argparse.Namespace(requests=1, tokens=16))
        for mode, response_format in MODES.items():
            rate = await run_mode(engine, response_format, args)
            print(f"{mode:12s} {rate:7.1f} tok/s")
    finally:
        await engine.stop()


if __name__ == "__main__":
    asyncio.run(main())
