"""Decode speed of free text, JSON mode and JSON schemas, on llguidance and on GBNF.

For each engine (``structured_output: llguidance``, then ``gbnf``) one in-process engine on
the default model runs the same greedy chat requests one at a time in each mode and reports
generated tokens per second: free text, ``json_object``, a nested ``json_schema`` both
engines enforce, and the same schema with a ``pattern`` (llguidance only; GBNF refuses it).
Then the llguidance token mask's own cost per token: the pattern answer is replayed through a
matcher, timing each mask (computed and unpacked as the sampler does) and consume.

    python benchmarks/structured_output.py [--requests 3] [--tokens 200] [--engines llguidance,gbnf]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from typing import Any

import numpy as np

from inferflux_core.config import ModelConfig, Settings
from inferflux_core.engine import Engine
from inferflux_core.errors import InvalidRequestError
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
PATTERN_SCHEMA: dict[str, Any] = {
    **SCHEMA,
    "properties": {
        **SCHEMA["properties"],
        "id": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{4}$"},
    },
    "required": ["id", *SCHEMA["required"]],
}
MODES: dict[str, dict[str, Any] | None] = {
    "text": None,
    "json_object": {"type": "json_object"},
    "json_schema": {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA}},
    "json_schema+pattern": {
        "type": "json_schema",
        "json_schema": {"name": "person", "schema": PATTERN_SCHEMA},
    },
}
MODEL = "smollm2-135m-instruct"


async def run_mode(
    engine: Engine, response_format: dict[str, Any] | None, args: Any
) -> tuple[float, str]:
    """Generated tokens per second over ``args.requests`` sequential requests, and the last
    reply's text."""
    tokens = 0
    elapsed = 0.0
    text = ""
    for i in range(args.requests):
        body: dict[str, Any] = {
            "model": MODEL,
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
        text = reply["choices"][0]["message"]["content"] or ""
    return tokens / elapsed, text


def mask_cost(engine: Engine, response_format: dict[str, Any], text: str) -> tuple[float, int]:
    """Microseconds per token of the llguidance mask (compute + unpack) and consume, over
    ``text``'s tokens replayed through a fresh matcher; and how many tokens were replayed."""
    from inferflux_core.structured.guidance import schema_guidance

    backend: Any = engine.model(MODEL).backend
    grammar = schema_guidance(response_format["json_schema"]["schema"])
    backend.check_llguidance(grammar)
    matcher = backend._matchers.new_matcher(grammar)  # the benchmark looks inside
    n_vocab = backend.info.vocab_size
    mask = np.zeros((n_vocab + 31) // 32, dtype=np.int32)
    tokens = backend.tokenize(text, add_special=False)
    started = time.perf_counter()
    replayed = 0
    for token in tokens:
        matcher.unsafe_compute_mask_ptr(mask.ctypes.data, mask.nbytes)
        np.unpackbits(mask.view(np.uint8), bitorder="little")[:n_vocab]
        if not matcher.consume_token(token):
            break
        replayed += 1
    elapsed = time.perf_counter() - started
    return (elapsed / max(replayed, 1)) * 1e6, replayed


async def main() -> None:
    """Run every mode and print one line each."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--engines", default="llguidance,gbnf")
    args = parser.parse_args()
    for kind in args.engines.split(","):
        await run_engine(kind, args)


async def run_engine(kind: str, args: Any) -> None:
    """Every mode on one engine (``structured_output: kind``), one line each."""
    options = {"structured_output": kind}
    engine = Engine(Settings(models=[ModelConfig(max_sequences=1, options=options)]))
    await engine.start()
    try:
        warm_up = argparse.Namespace(requests=1, tokens=16)
        for response_format in MODES.values():  # build tokenizers, grammars, caches
            with contextlib.suppress(InvalidRequestError):
                await run_mode(engine, response_format, warm_up)
        free = 0.0
        for mode, response_format in MODES.items():
            try:
                rate, text = await run_mode(engine, response_format, args)
            except InvalidRequestError as exc:
                print(f"{kind:10s} {mode:20s} refused: {exc.message[:80]}")
                continue
            free = rate if mode == "text" else free
            share = f"{100 * rate / free:5.1f}% of text" if free else ""
            print(f"{kind:10s} {mode:20s} {rate:7.1f} tok/s {share}")
            if kind == "llguidance" and mode == "json_schema+pattern" and response_format:
                micros, replayed = mask_cost(engine, response_format, text)
                print(f"{kind:10s} mask + consume       {micros:7.1f} µs/token over {replayed}")
    finally:
        await engine.stop()


if __name__ == "__main__":
    asyncio.run(main())
