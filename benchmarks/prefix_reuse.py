"""Time to first token over a 10-turn chat with a long system prompt, with and without reuse.

Every turn resends the whole conversation (a ~1,500-token system prompt, then the turns so
far), as chat clients do. A server that reuses the KV of the shared prefix only prefills the
new part. Compared in one run, one server at a time:

- inferflux with ``scheduler.prefix_reuse: true`` (the default),
- inferflux with it off,
- llama-cpp-python's server (it keeps the previous prompt's KV and reuses its longest prefix).

    python benchmarks/prefix_reuse.py [--turns 10] [--skip-reference]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from dataclasses import dataclass, field

import httpx
from _bench_client import read_chat
from _servers import ServerProcess, inferflux_server, llama_cpp_server, running
from _workload import CONTEXT_LENGTH, MODEL_NAME, MODEL_SOURCE, model_path, usable_cores

TOPICS = [
    "harbours",
    "glaciers",
    "libraries",
    "orchards",
    "railways",
    "volcanoes",
    "bridges",
    "deserts",
    "lighthouses",
    "vineyards",
    "observatories",
    "canals",
]
QUESTIONS = [
    "What is a lighthouse?",
    "Why are they tall?",
    "Who kept them?",
    "What fuel did they burn?",
    "When did they become automatic?",
    "Are any still staffed?",
    "Name a famous one.",
    "How far can the light be seen?",
    "What is a fog signal?",
    "Summarize our conversation in one sentence.",
]


def system_prompt(target_tokens: int = 1500) -> str:
    """A long, varied system prompt of roughly ``target_tokens`` tokens (about 4 chars each)."""
    sentences = []
    i = 0
    while sum(len(s) for s in sentences) < target_tokens * 4.2:
        topic = TOPICS[i % len(TOPICS)]
        sentences.append(
            f"Rule {i + 1}: when the user asks about {topic}, answer plainly, cite no sources, "
            f"and keep to {i % 5 + 2} short sentences."
        )
        i += 1
    return "You are a careful assistant. " + " ".join(sentences)


@dataclass
class Conversation:
    """One contender's turns: time to first token and prompt size of each."""

    label: str
    ttft: list[float] = field(default_factory=list)
    prompt_tokens: list[int] = field(default_factory=list)


async def _turn(
    client: httpx.AsyncClient, messages: list[dict[str, str]], max_tokens: int
) -> tuple[float, str, int]:
    body = {
        "model": MODEL_NAME,
        "messages": messages,
        "temperature": 0,
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    reply = await read_chat(client, body)
    if reply.first_content is None:
        raise RuntimeError("the reply had no content")
    return reply.ttft, reply.text, reply.usage.get("prompt_tokens", 0)


async def converse(server: ServerProcess, turns: int, max_tokens: int) -> Conversation:
    """Play the conversation against a running server."""
    result = Conversation(server.label)
    messages = [{"role": "system", "content": system_prompt()}]
    async with httpx.AsyncClient(
        base_url=server.base_url, headers=server.headers, timeout=600
    ) as client:
        for question in QUESTIONS[:turns]:
            messages.append({"role": "user", "content": question})
            ttft, answer, n_prompt = await _turn(client, messages, max_tokens)
            messages.append({"role": "assistant", "content": answer})
            result.ttft.append(ttft)
            result.prompt_tokens.append(n_prompt)
    return result


def inferflux(reuse: bool) -> ServerProcess:
    """inferflux with prefix reuse on or off."""
    server = inferflux_server(MODEL_NAME, MODEL_SOURCE, CONTEXT_LENGTH, max_sequences=8)
    server.env["INFERFLUX_SCHEDULER__PREFIX_REUSE"] = "true" if reuse else "false"
    server.env["INFERFLUX_SCHEDULER__PREFILL_CHUNK"] = "256"
    server.label = f"inferflux, prefix reuse {'on' if reuse else 'off'}"
    return server


def report(results: list[Conversation]) -> str:
    """A per-turn table and the later-turn medians."""
    header = "| turn | prompt tokens | " + " | ".join(r.label for r in results) + " |"
    lines = [header, "|" + "---|" * (len(results) + 2)]
    for turn in range(len(results[0].ttft)):
        cells = [f"{r.ttft[turn] * 1000:.0f} ms" for r in results]
        n_prompt = next((r.prompt_tokens[turn] for r in results if r.prompt_tokens[turn]), 0)
        lines.append(f"| {turn + 1} | {n_prompt} | " + " | ".join(cells) + " |")
    medians = [statistics.median(r.ttft[1:]) for r in results]
    lines.append(
        "| median, turns 2+ | | " + " | ".join(f"{m * 1000:.0f} ms" for m in medians) + " |"
    )
    by_label = dict(zip((r.label for r in results), medians, strict=True))
    on = by_label.get("inferflux, prefix reuse on")
    off = by_label.get("inferflux, prefix reuse off")
    if on and off:
        lines.append(f"\nreuse on is {off / on:.1f}x faster to the first token on turns 2+")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run every contender alone, in turn, and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--skip-reference", action="store_true")
    args = parser.parse_args(argv)
    contenders = [inferflux(True), inferflux(False)]
    if not args.skip_reference:
        contenders.append(llama_cpp_server(model_path(), usable_cores(), CONTEXT_LENGTH))
    results = []
    for server in contenders:
        with running(server):
            results.append(asyncio.run(converse(server, args.turns, args.max_tokens)))
    print(report(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
