"""inferflux against llama.cpp's own ``llama-server``, side by side on one machine.

``llama-server`` is built once from the llama.cpp sources vendored in the llama-cpp-python sdist
inferflux pins (``_llama_server_build.py``; 15+ minutes on 2 cores, then cached). Both servers
get the same GGUF (SmolLM2-135M-Instruct Q4_1), the same threads, the same repacking choice,
8 slots of 2,048 tokens each (one KV stream per slot) and flash attention as llama.cpp decides;
one server runs at a time.

1. **throughput**: streaming chat, 128 tokens with EOS ignored, at 1, 8 and 32 clients, three
   runs each (levels interleaved, the two servers taking turns run by run), medians and ratios;
2. **multi-turn**: a 10-turn conversation with a ~1,500-token system prompt, greedy, each turn's
   answer appended to the history; time to first token of turns 2-10; each turn's answer is
   checked against a fresh run of the same history (inferflux: a server with prefix reuse off;
   llama-server: ``cache_prompt: false``);
3. **long prompt**: time to the first token of a ~4,096-token prompt (one slot of 8,192).

    .venv/bin/python benchmarks/llama_server_side_by_side.py
    .venv/bin/python benchmarks/llama_server_side_by_side.py --skip-multi-turn --repeat 1

See benchmarks/README.md for what the numbers mean.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from _bench_client import read_chat
from _cpu import load_average
from _llama_server_build import build as build_llama_server
from _servers import ServerProcess, _clean_env, free_port, inferflux_models_server, running
from _workload import MODEL_NAME, MODEL_SOURCE, cpu_has_amx, cpu_name, model_path, usable_cores
from serving_throughput import ServerResults, inferflux_body, measure_server, wait_until_quiet

SLOTS = 8
SLOT_CONTEXT = 2048
#: Tokens per slot in the multi-turn part (its conversation outgrows 2,048).
MULTI_TURN_CONTEXT = 4096

#: The multi-turn conversation: a long system prompt, then short questions about it.
SYSTEM_RULES = [
    "Orders ship from the warehouse in Lyon within two business days.",
    "Refunds are issued to the original payment method within ten days.",
    "Customers in the loyalty program get free shipping above fifty euros.",
    "Damaged items must be reported with a photo within seven days.",
    "Gift cards never expire and cannot be exchanged for cash.",
    "Support answers emails in French, English, German and Spanish.",
    "Large furniture is delivered by appointment, Monday to Saturday.",
    "Prices include VAT for every country of the European Union.",
]
QUESTIONS = [
    "How fast do orders ship?",
    "And how long does a refund take?",
    "Do I pay for shipping if I am in the loyalty program?",
    "What should I do if my parcel arrived damaged?",
    "Can I turn a gift card into cash?",
    "Which languages does support speak?",
    "When is furniture delivered?",
    "Are taxes included in the prices?",
    "Summarize the three rules you find most important.",
    "Thank you. Anything else I should know?",
]


def system_prompt(n_rules: int) -> str:
    """A store policy of ``n_rules`` numbered rules (about 19 tokens each)."""
    lines = [f"Rule {i + 1}: {SYSTEM_RULES[i % len(SYSTEM_RULES)]}" for i in range(n_rules)]
    return "You are the support assistant of a store. Its policy:\n" + "\n".join(lines)


# --- the servers ---------------------------------------------------------------------------


def llama_server(
    binary: str,
    threads: int,
    *,
    cache_prompt: bool = True,
    slots: int = SLOTS,
    slot_context: int = SLOT_CONTEXT,
) -> ServerProcess:
    """``llama-server -np 8`` with 2,048 tokens per slot (or as given), on a free port."""
    port = free_port()
    argv = [
        binary,
        "-m",
        str(model_path()),
        "-np",
        str(slots),
        "-c",
        str(slots * slot_context),
        "--no-kv-unified",
        "-t",
        str(threads),
        "-tb",
        str(threads),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-webui",
        "--log-disable",
    ]
    if cpu_has_amx():
        argv.append("--no-repack")  # as inferflux's repack: auto
    if not cache_prompt:
        argv.append("--no-cache-prompt")
    return ServerProcess(
        label="llama-server", argv=argv, port=port, ready_path="/health", env=_clean_env()
    )


def inferflux(
    threads: int,
    label: str = "inferflux",
    *,
    slots: int = SLOTS,
    slot_context: int = SLOT_CONTEXT,
    **scheduler: Any,
) -> ServerProcess:
    """``inferflux serve`` with 8 sequences of 2,048 tokens (or as given); ``scheduler``
    settings as environment variables."""
    model = {
        "name": MODEL_NAME,
        "source": MODEL_SOURCE,
        "context_length": slot_context,
        "max_sequences": slots,
        "options": {"threads": threads},
    }
    env = {
        f"INFERFLUX_SCHEDULER__{k.upper()}": v if isinstance(v, str) else json.dumps(v)
        for k, v in scheduler.items()
    }
    return inferflux_models_server(label, [model], env)


def llama_server_body(max_tokens: int) -> Callable[[int], dict[str, Any]]:
    """llama-server's bodies: the same request, with its native ``ignore_eos``."""
    ours = inferflux_body(max_tokens)

    def body(index: int) -> dict[str, Any]:
        return {**ours(index), "cache_prompt": True}

    return body


# --- throughput ----------------------------------------------------------------------------


def measure_throughputs(
    contenders: list[tuple[Callable[[], ServerProcess], Callable[[int], dict[str, Any]]]],
    args: argparse.Namespace,
) -> list[ServerResults]:
    """Each contender (a server factory and its request bodies) measured ``args.repeat``
    times, the servers taking turns run by run (A B A B ...), so a machine that speeds up or
    slows down over the minutes favours neither; a server that fails is not run again."""
    results: list[ServerResults] = []
    for run in range(args.repeat):
        for position, (make_server, body) in enumerate(contenders):
            server = make_server()
            if run == 0:
                results.append(ServerResults(server.label, all_rounds={n: [] for n in args.levels}))
            result = results[position]
            if result.error is not None:
                continue
            print(f"# {server.label}: throughput, run {run + 1}", file=sys.stderr, flush=True)
            try:
                with running(server):
                    part = asyncio.run(
                        measure_server(
                            server,
                            body,
                            args.tokens,
                            args.levels,
                            1,
                            "median",
                            args.retries,
                            first_index=run * 10_000,
                        )
                    )
            except Exception as exc:
                print(f"# {server.label}: FAILED: {exc}", file=sys.stderr, flush=True)
                result.error = str(exc).splitlines()[0]
                continue
            for level, rounds in part.all_rounds.items():
                result.all_rounds[level].extend(rounds)
            result.discarded += part.discarded
    return results


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def throughput_table(ours: ServerResults, theirs: ServerResults, levels: list[int]) -> str:
    """Medians over the runs: aggregate tok/s, their ratio, and TTFT p50 (median of runs)."""
    lines = [
        "| clients | inferflux tok/s | llama-server tok/s | ratio | TTFT p50 inferflux | "
        "TTFT p50 llama-server | TTFT max inferflux | TTFT max llama-server |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for level in levels:
        cells = [str(level)]
        rates = []
        for result in (ours, theirs):
            rounds = result.all_rounds.get(level, [])
            rate = _median([r.aggregate_tok_s for r in rounds])
            rates.append(rate)
            cells.append("failed" if rate is None else f"{rate:.1f}")
        ratio = rates[0] / rates[1] if rates[0] and rates[1] else None
        cells.append("-" if ratio is None else f"{ratio:.2f}")
        for pick in ("median_ttft", "max_ttft"):
            for result in (ours, theirs):
                rounds = result.all_rounds.get(level, [])
                value = _median([v for r in rounds if (v := getattr(r, pick)) is not None])
                cells.append("-" if value is None else _ms(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


# --- multi-turn ----------------------------------------------------------------------------


@dataclass
class Turn:
    """One turn of the conversation as one server answered it."""

    ttft: float
    answer: str
    prompt_tokens: int | None


@dataclass
class Conversation:
    """A server's run of the conversation, and how its answers compare with fresh runs."""

    label: str
    turns: list[Turn] = field(default_factory=list)
    identical: int | None = None
    error: str | None = None


def _turn_client(server: ServerProcess) -> httpx.AsyncClient:
    """A client with a new connection per turn: llama-server may close a kept-alive one after
    a stream, and a turn must never fail on a stale connection."""
    return httpx.AsyncClient(
        base_url=server.base_url,
        headers=server.headers,
        limits=httpx.Limits(max_keepalive_connections=0),
        timeout=httpx.Timeout(600.0),
    )


async def chat_turn(
    client: httpx.AsyncClient, body: dict[str, Any]
) -> tuple[float, str, int | None]:
    """Stream one chat completion: seconds to the first content, the text, prompt tokens."""
    reply = await read_chat(client, body)
    return reply.ttft, reply.text, reply.usage.get("prompt_tokens")


def turn_body(
    messages: list[dict[str, str]], max_tokens: int, extra: dict[str, Any]
) -> dict[str, Any]:
    """The request of one turn: greedy, streamed, usage included."""
    return {
        "model": MODEL_NAME,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        **extra,
    }


async def converse(
    server: ServerProcess, args: argparse.Namespace, extra: dict[str, Any]
) -> Conversation:
    """Run the conversation on ``server``; returns its turns (the history is its own)."""
    result = Conversation(server.label)
    messages = [{"role": "system", "content": system_prompt(args.rules)}]
    async with _turn_client(server) as client:
        # warm-up on another conversation, so turn 1 does not pay for first-call costs
        await chat_turn(client, turn_body([{"role": "user", "content": "Hello"}], 8, extra))
        for question in QUESTIONS[: args.turns]:
            messages.append({"role": "user", "content": question})
            ttft, answer, n_prompt = await chat_turn(
                client, turn_body(messages, args.turn_tokens, extra)
            )
            result.turns.append(Turn(ttft, answer, n_prompt))
            messages.append({"role": "assistant", "content": answer})
    return result


async def replay_fresh(
    server: ServerProcess,
    conversation: Conversation,
    args: argparse.Namespace,
    extra: dict[str, Any],
) -> int:
    """How many of ``conversation``'s answers a server that reuses nothing gives again."""
    messages = [{"role": "system", "content": system_prompt(args.rules)}]
    identical = 0
    async with _turn_client(server) as client:
        for question, turn in zip(QUESTIONS, conversation.turns, strict=False):
            messages.append({"role": "user", "content": question})
            _ttft, answer, _n = await chat_turn(
                client, turn_body(messages, args.turn_tokens, extra)
            )
            identical += answer == turn.answer
            messages.append({"role": "assistant", "content": turn.answer})
    return identical


def run_conversation(
    server: ServerProcess,
    args: argparse.Namespace,
    extra: dict[str, Any],
    fresh: Callable[[], ServerProcess] | None,
    fresh_extra: dict[str, Any],
) -> Conversation:
    """The conversation on ``server``, then its answers checked on ``fresh()``."""
    print(f"# {server.label}: multi-turn", file=sys.stderr, flush=True)
    try:
        with running(server):
            conversation = asyncio.run(converse(server, args, extra))
        if fresh is not None:
            with running(fresh()) as reference:
                conversation.identical = asyncio.run(
                    replay_fresh(reference, conversation, args, fresh_extra)
                )
        return conversation
    except Exception as exc:
        print(f"# {server.label}: FAILED: {exc}", file=sys.stderr, flush=True)
        return Conversation(server.label, error=str(exc).splitlines()[0])


def conversation_table(conversations: list[Conversation]) -> str:
    """TTFT of turn 1 and of turns 2+ (median, max), prompt size, answers as a fresh run."""
    lines = [
        "| server | turn 1 TTFT | turns 2+ TTFT p50 | turns 2+ TTFT max | last prompt tokens | "
        "answers identical to a fresh run |",
        "|---|---|---|---|---|---|",
    ]
    for c in conversations:
        if c.error is not None or not c.turns:
            lines.append(f"| {c.label} | failed: {c.error} | | | | |")
            continue
        later = [t.ttft for t in c.turns[1:]]
        same = "-" if c.identical is None else f"{c.identical}/{len(c.turns)}"
        p50 = _ms(statistics.median(later)) if later else "-"
        worst = _ms(max(later)) if later else "-"
        n_last = c.turns[-1].prompt_tokens or "?"
        lines.append(
            f"| {c.label} | {_ms(c.turns[0].ttft)} | {p50} | {worst} | {n_last} | {same} |"
        )
    return "\n".join(lines)


# --- a long prompt -------------------------------------------------------------------------


async def long_prompt_ttfts(server: ServerProcess, rules: int, runs: int) -> list[float]:
    """Seconds to the first token of a one-turn chat with a ``rules``-rule system prompt,
    ``runs`` times, each prompt new (its first line differs), so nothing is reused."""
    ttfts = []
    async with _turn_client(server) as client:
        await chat_turn(client, turn_body([{"role": "user", "content": "Hello"}], 4, {}))
        for run in range(runs):
            system = f"Session {run}. " + system_prompt(rules)
            messages = [{"role": "system", "content": system}, {"role": "user", "content": "Hi"}]
            ttft, _answer, _n = await chat_turn(client, turn_body(messages, 4, {}))
            ttfts.append(ttft)
    return ttfts


def long_prompt_table(binary: str, args: argparse.Namespace) -> str:
    """TTFT of a ~4,096-token prompt on each server (one slot of 8,192 tokens)."""
    lines = ["| server | TTFT p50 | runs |", "|---|---|---|"]
    servers = [
        inferflux(args.threads, slots=1, slot_context=8192),
        llama_server(binary, args.threads, slots=1, slot_context=8192),
    ]
    for server in servers:
        print(f"# {server.label}: long prompt", file=sys.stderr, flush=True)
        try:
            with running(server):
                ttfts = asyncio.run(long_prompt_ttfts(server, args.long_rules, args.repeat))
            lines.append(f"| {server.label} | {_ms(statistics.median(ttfts))} | {len(ttfts)} |")
        except Exception as exc:
            lines.append(f"| {server.label} | failed: {str(exc).splitlines()[0]} | |")
    return "\n".join(lines)


# --- main ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=128, help="tokens per stream")
    parser.add_argument("--concurrency", default="1,8,32", help="client levels, e.g. 1,8,32")
    parser.add_argument("--repeat", type=int, default=3, help="runs per level")
    parser.add_argument("--threads", type=int, default=usable_cores())
    parser.add_argument("--retries", type=int, default=5, help="re-runs of a contended round")
    parser.add_argument("--wait-quiet", type=float, default=0.0, help="wait for load < 0.5")
    parser.add_argument("--turns", type=int, default=10, choices=range(2, len(QUESTIONS) + 1))
    parser.add_argument("--rules", type=int, default=83, help="system prompt rules (~19 tokens)")
    parser.add_argument("--turn-tokens", type=int, default=64, help="max tokens per answer")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-multi-turn", action="store_true")
    parser.add_argument("--skip-long-prompt", action="store_true")
    parser.add_argument(
        "--long-rules", type=int, default=215, help="rules of the long prompt (~4,096 tokens)"
    )
    args = parser.parse_args(argv)
    args.levels = [int(x) for x in args.concurrency.split(",") if x]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    binary = str(build_llama_server())
    if args.wait_quiet:
        wait_until_quiet(0.5, args.wait_quiet)
    print(f"## inferflux vs llama-server, side by side on {cpu_name()}")
    print(
        f"{args.threads} threads, {SLOTS} slots x {SLOT_CONTEXT} tokens, repacking "
        f"{'off (AMX)' if cpu_has_amx() else 'on'}, load before: {load_average()}\n"
    )
    if not args.skip_throughput:
        ours, theirs = measure_throughputs(
            [
                (lambda: inferflux(args.threads), inferflux_body(args.tokens)),
                (lambda: llama_server(binary, args.threads), llama_server_body(args.tokens)),
            ],
            args,
        )
        print(
            f"### Throughput: streaming chat, {args.tokens} tokens, EOS ignored, "
            f"median of {args.repeat} runs, the servers taking turns\n"
        )
        print(throughput_table(ours, theirs, args.levels))
        for result in (ours, theirs):
            if result.error:
                print(f"\n{result.label} failed: {result.error}")
            if result.discarded:
                print(f"\n{result.label}: {result.discarded} contended round(s) measured again")
        print()
    if not args.skip_multi_turn:
        # a 10-turn conversation outgrows 2,048 tokens: the servers get 4,096 per slot here
        ctx = {"slot_context": MULTI_TURN_CONTEXT}

        def fresh_inferflux() -> ServerProcess:
            return inferflux(args.threads, "inferflux (no reuse)", prefix_reuse=False, **ctx)

        def fresh_exact() -> ServerProcess:
            # the same decode path (a lone long decode step padded), nothing reused
            return inferflux(
                args.threads,
                "inferflux (no reuse, exact decode rows)",
                prefix_reuse=False,
                reuse_generated="exact",
                **ctx,
            )

        conversations = [
            run_conversation(inferflux(args.threads, **ctx), args, {}, fresh_inferflux, {}),
            run_conversation(
                inferflux(
                    args.threads,
                    "inferflux reuse_generated: exact",
                    reuse_generated="exact",
                    **ctx,
                ),
                args,
                {},
                fresh_exact,
                {},
            ),
            run_conversation(
                llama_server(binary, args.threads, **ctx),
                args,
                {"cache_prompt": True},
                lambda: llama_server(binary, args.threads, cache_prompt=False, **ctx),
                {"cache_prompt": False},
            ),
        ]
        print(
            f"### Multi-turn: {args.turns} turns, {args.rules}-rule system prompt, "
            f"answers of up to {args.turn_tokens} tokens, greedy, {MULTI_TURN_CONTEXT} tokens "
            "per slot\n"
        )
        print(conversation_table(conversations))
        print()
    if not args.skip_long_prompt:
        print(
            f"### Time to first token of a long prompt ({args.long_rules} rules), nothing reused\n"
        )
        print(long_prompt_table(binary, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
