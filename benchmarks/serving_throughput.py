"""Serving throughput of inferflux against raw llama-cpp-python and llama-cpp-python's server.

One run measures, on the default model (SmolLM2-135M-Instruct Q4_1) and the same chat prompt:

1. raw llama-cpp-python, in-process: the low-level API, one sequence, greedy, ``N`` tokens;
2. llama-cpp-python's own server (``python -m llama_cpp.server``), streaming over HTTP;
3. inferflux (``inferflux serve``), streaming over HTTP,

at each concurrency level, every stream generating exactly ``N`` tokens (EOS suppressed), and
prints one Markdown table. Each server runs alone: start, warm up, measure, stop, then the next.

    .venv/bin/python benchmarks/serving_throughput.py                 # the full comparison
    .venv/bin/python benchmarks/serving_throughput.py --tokens 16     # a quick check
    .venv/bin/python benchmarks/serving_throughput.py --skip-reference --concurrency 1,8

See benchmarks/README.md for what each number means.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from _bench_client import RoundResult, new_client, run_round
from _cpu import CONTENTION_CORES, RETRY_PAUSE_SECONDS, load_average
from _servers import ServerProcess, inferflux_server, llama_cpp_server, running
from _workload import (
    CONTEXT_LENGTH,
    MODEL_NAME,
    MODEL_SOURCE,
    cpu_has_amx,
    cpu_name,
    messages,
    model_path,
    usable_cores,
)

HERE = Path(__file__).resolve().parent
RAW = "raw llama-cpp-python (in-process, 1 seq)"
LLAMA_SERVER = "llama-cpp-python server"
INFERFLUX = "inferflux"

T = TypeVar("T")


@dataclass
class ServerResults:
    """The chosen round per concurrency level of one server, or why it failed."""

    label: str
    rounds: dict[int, RoundResult] = field(default_factory=dict)
    all_rounds: dict[int, list[RoundResult]] = field(default_factory=dict)
    error: str | None = None
    profile: str | None = None
    discarded: int = 0


@dataclass
class RawResults:
    """The chosen raw run, all runs, and the EOG token ids the model reports."""

    run: dict[str, Any] | None = None
    runs: list[dict[str, Any]] = field(default_factory=list)
    eog_tokens: list[int] = field(default_factory=list)
    error: str | None = None
    discarded: int = 0


# --- the contenders ------------------------------------------------------------------------


def measure_raw(tokens: int, repeat: int, threads: int, pick: str, retries: int) -> RawResults:
    """Run the raw low-level loop in a child process (the client never holds the model)."""
    argv = [
        sys.executable,
        str(HERE / "_raw_llama.py"),
        "--tokens",
        str(tokens),
        "--repeat",
        str(repeat),
        "--threads",
        str(threads),
        "--retry-contended",
        str(retries),
    ]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
    except subprocess.TimeoutExpired:
        return RawResults(error="timed out")
    if done.returncode != 0:
        return RawResults(error=f"exit status {done.returncode}: {done.stderr[-2000:]}")
    data = json.loads(done.stdout.strip().splitlines()[-1])
    runs = data["runs"]
    return RawResults(
        run=choose(runs, lambda r: r["tok_s"], pick),
        runs=runs,
        eog_tokens=data["eog_tokens"],
        discarded=data["discarded"],
    )


def choose(items: list[T], key: Callable[[T], float], pick: str) -> T:
    """The best (highest ``key``) or the median item (the lower middle one for an even count)."""
    ordered = sorted(items, key=key)
    return ordered[-1] if pick == "best" else ordered[(len(ordered) - 1) // 2]


def inferflux_body(max_tokens: int) -> Callable[[int], dict[str, Any]]:
    """Request bodies for inferflux: EOS suppressed with its ``ignore_eos`` extension."""

    def body(index: int) -> dict[str, Any]:
        return {
            "model": MODEL_NAME,
            "messages": messages(index),
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
            "ignore_eos": True,
        }

    return body


def llama_server_body(max_tokens: int, eog_tokens: list[int]) -> Callable[[int], dict[str, Any]]:
    """Request bodies for llama-cpp-python's server.

    It has no ``ignore_eos``: EOS and every other end-of-generation token get a logit bias of
    -100 instead. ``repeat_penalty: 1`` turns off its default repetition penalty (1.1), so it
    samples as plain greedy, like the others.
    """
    bias = {str(token): -100.0 for token in eog_tokens}

    def body(index: int) -> dict[str, Any]:
        return {
            "model": MODEL_NAME,
            "messages": messages(index),
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": True,
            "repeat_penalty": 1.0,
            "logit_bias": bias,
        }

    return body


async def measure_server(
    server: ServerProcess,
    make_body: Callable[[int], dict[str, Any]],
    tokens: int,
    levels: list[int],
    repeat: int,
    pick: str,
    retries: int,
    profile: Path | None = None,
    first_index: int = 0,
) -> ServerResults:
    """Warm ``server`` up, then run ``repeat`` rounds at every concurrency level (request
    indexes, which make prompts distinct, counted from ``first_index``).

    A round during which other processes used more than ``CONTENTION_CORES`` cores is
    discarded and run again after a pause, at most ``retries`` times in all.
    """
    results = ServerResults(server.label, all_rounds={c: [] for c in levels})
    url = "/v1/chat/completions"
    async with new_client(server.base_url, max(levels), server.headers) as client:
        warm = await run_round(client, url, make_body, 1, tokens, [server.pid], first_index=1000)
        _raise_on_errors(warm, "warm-up")
        warm = await run_round(client, url, make_body, max(levels), 16, [server.pid], 1001)
        _raise_on_errors(warm, "warm-up")
        index = first_index
        for _ in range(repeat):
            for level in levels:
                while True:
                    result = await run_round(
                        client, url, make_body, level, tokens, [server.pid], first_index=index
                    )
                    index += level
                    _raise_on_errors(result, f"{level} clients")
                    other = result.cpu.other
                    if other is None or other <= CONTENTION_CORES or results.discarded >= retries:
                        break
                    results.discarded += 1
                    print(
                        f"# {server.label}: {level} clients: other processes used {other:.2f} "
                        f"cores; measuring again in {RETRY_PAUSE_SECONDS:.0f} s",
                        file=sys.stderr,
                        flush=True,
                    )
                    await asyncio.sleep(RETRY_PAUSE_SECONDS)
                results.all_rounds[level].append(result)
        if profile is not None:
            results.profile = await profile_round(
                server, client, url, make_body, max(levels), tokens, profile
            )
    for level, rounds in results.all_rounds.items():
        results.rounds[level] = choose(rounds, lambda r: r.aggregate_tok_s, pick)
    return results


def _raise_on_errors(result: RoundResult, what: str) -> None:
    if result.errors:
        raise RuntimeError(f"{what}: {len(result.errors)} stream(s) failed: {result.errors[0]}")


def run_server(
    server: ServerProcess,
    make_body: Callable[[int], dict[str, Any]],
    args: argparse.Namespace,
    profile: Path | None = None,
) -> ServerResults:
    """Start ``server``, measure it, and stop it, whatever happens; failures become a result."""
    print(f"# {server.label}: starting on port {server.port}", file=sys.stderr, flush=True)
    try:
        with running(server):
            started = time.monotonic()
            result = asyncio.run(
                measure_server(
                    server,
                    make_body,
                    args.tokens,
                    args.levels,
                    args.repeat,
                    args.pick,
                    args.retry_contended,
                    profile,
                )
            )
            print(
                f"# {server.label}: measured in {time.monotonic() - started:.0f} s",
                file=sys.stderr,
                flush=True,
            )
            return result
    except Exception as exc:
        print(f"# {server.label}: FAILED: {exc}", file=sys.stderr, flush=True)
        return ServerResults(server.label, error=str(exc).splitlines()[0])


# --- profiling -----------------------------------------------------------------------------


async def profile_round(
    server: ServerProcess,
    client: Any,
    url: str,
    make_body: Callable[[int], dict[str, Any]],
    concurrency: int,
    tokens: int,
    output: Path,
) -> str:
    """One extra, unreported round under ``py-spy record``; returns the hot-spot summary."""
    py_spy = Path(sys.executable).with_name("py-spy")
    if not py_spy.exists():
        return "profile: py-spy is not installed in this venv; skipped"
    argv = [
        str(py_spy),
        "record",
        "--pid",
        str(server.pid),
        "--rate",
        "250",
        "--format",
        "raw",
        "--threads",
        "--nonblocking",
        "--output",
        str(output),
    ]
    spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        await asyncio.sleep(1.0)  # let py-spy attach
        result = await run_round(client, url, make_body, concurrency, tokens, [server.pid], 5000)
        spy.send_signal(signal.SIGINT)
        _, err = spy.communicate(timeout=30)
    finally:
        if spy.poll() is None:
            spy.kill()
            spy.wait()
    if not output.exists():
        return f"profile: py-spy wrote nothing: {err.decode()[-500:]}"
    return (
        f"profile of inferflux, one extra round of {concurrency} clients under py-spy "
        f"({result.aggregate_tok_s:.0f} tok/s while sampled; collapsed stacks in {output}):\n"
        + summarize_profile(output)
    )


def summarize_profile(path: Path, top: int = 12) -> str:
    """The hottest functions of a py-spy ``--format raw --threads`` file, with their threads."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        thread, *frames = stack.split(";")
        name = _thread_name(thread)
        total += count
        threads[name] += count
        if frames:
            own[f"{_function(frames[-1])}  [{name}]"] += count
        for function in {_function(frame) for frame in frames}:
            inclusive[f"{function}  [{name}]"] += count
    if not total:
        return "(empty profile)"
    lines = [f"py-spy: {total} samples of non-idle threads; % of all samples", "by thread:"]
    lines += [f"  {n / total:6.1%}  {t}" for t, n in threads.most_common(6)]
    lines.append("own time (the innermost Python function; C calls count for their caller):")
    lines += [f"  {n / total:6.1%}  {k}" for k, n in own.most_common(top)]
    lines.append("inclusive time:")
    lines += [f"  {n / total:6.1%}  {k}" for k, n in inclusive.most_common(top * 2)]
    return "\n".join(lines)


def _function(frame: str) -> str:
    """``func (dir/file.py)`` from py-spy's ``func (path/to/dir/file.py:123)``."""
    name, _, where = frame.partition(" (")
    if not where:
        return frame
    location = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({'/'.join(location.split('/')[-2:])})"


def _thread_name(thread_frame: str) -> str:
    """The thread's name from py-spy's ``thread (TID): NAME`` root frame."""
    return thread_frame.split("): ", 1)[-1]


# --- the report ----------------------------------------------------------------------------


def _rate(value: float) -> str:
    return f"{value:.0f} tok/s" if value >= 10 else f"{value:.1f} tok/s"


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _cores(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f}"


def _tokens_cell(result: RoundResult) -> str:
    counts = result.token_counts
    known = [n for n in counts if n is not None]
    if result.tokens_exact:
        return f"{result.max_tokens} ✓"
    if not known:
        return "unknown ✗"
    return f"{min(known)}-{max(known)} ✗"


def report(args: argparse.Namespace, raw: RawResults | None, servers: list[ServerResults]) -> str:
    """The summary table, the ratio line, and the per-round details."""
    levels = args.levels
    top = max(levels)
    header = [
        "server",
        *(f"{c} client{'s' if c > 1 else ''}" for c in levels),
        f"median TTFT, {top} client{'s' if top > 1 else ''}",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    if raw is not None:
        if raw.run is None:
            cells = [f"failed: {raw.error}"] + [""] * len(levels)
        else:
            cells = [_rate(raw.run["tok_s"]) if c == 1 else "" for c in levels] + [""]
            if 1 not in levels:
                cells[0] = f"{_rate(raw.run['tok_s'])} (1 seq)"
        lines.append("| " + " | ".join([RAW, *cells]) + " |")
    for server in servers:
        if server.error:
            cells = [f"failed: {server.error}"] + [""] * len(levels)
        else:
            cells = []
            for c in levels:
                r = server.rounds[c]
                cell = _rate(r.aggregate_tok_s)
                if c > 1:
                    cell += f" ({r.per_stream_tok_s:.0f}/stream)"
                if not r.tokens_exact:
                    cell += " ✗"
                cells.append(cell)
            cells.append(_seconds(server.rounds[top].median_ttft))
        lines.append("| " + " | ".join([server.label, *cells]) + " |")

    out = ["", *lines, ""]
    by_label = {s.label: s for s in servers if not s.error}
    if raw is not None and raw.run is not None and 1 in levels:
        ratios = [
            f"{label} / raw = {by_label[label].rounds[1].aggregate_tok_s / raw.run['tok_s']:.2f}"
            for label in (INFERFLUX, LLAMA_SERVER)
            if label in by_label
        ]
        if ratios:
            out.append("single stream: " + "; ".join(ratios))
    if INFERFLUX in by_label and LLAMA_SERVER in by_label:
        ratios = [
            f"{c}: {by_label[INFERFLUX].rounds[c].aggregate_tok_s / by_label[LLAMA_SERVER].rounds[c].aggregate_tok_s:.2f}x"  # noqa: E501
            for c in levels
        ]
        out.append("inferflux / llama-cpp-python server, aggregate: " + ", ".join(ratios))
    out += ["", *details(args, raw, servers)]
    return "\n".join(out)


def details(
    args: argparse.Namespace, raw: RawResults | None, servers: list[ServerResults]
) -> list[str]:
    """One row per reported measurement: rates, latencies, token checks and CPU use."""
    pick = "best" if args.pick == "best" else "median"
    lines = [
        f"details ({pick} of {args.repeat} by aggregate tok/s; CPU in cores: "
        f"server / client / other processes):",
        "",
        "| server | clients | aggregate | per stream | TTFT median | TTFT max | wall "
        "| tokens/stream | content chunks | CPU srv/cli/other | all runs, tok/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    if raw is not None and raw.run is not None:
        run = raw.run
        all_runs = ", ".join(f"{r['tok_s']:.0f}" for r in raw.runs)
        lines.append(
            f"| raw | 1 | {_rate(run['tok_s'])} | decode {_rate(run['decode_tok_s'])} "
            f"| {_seconds(run['ttft'])} | | {run['seconds']:.2f} s | {run['tokens']} ✓ | "
            f"| {_cores(run['cpu_self'])} / - / {_cores(run['cpu_other'])} | {all_runs} |"
        )
    for server in servers:
        if server.error:
            continue
        for c in args.levels:
            r = server.rounds[c]
            low, high = r.chunk_range
            all_runs = ", ".join(f"{x.aggregate_tok_s:.0f}" for x in server.all_rounds[c])
            lines.append(
                f"| {server.label} | {c} | {_rate(r.aggregate_tok_s)} "
                f"| {_rate(r.per_stream_tok_s)} | {_seconds(r.median_ttft)} "
                f"| {_seconds(r.max_ttft)} | {r.wall:.2f} s | {_tokens_cell(r)} "
                f"| {low}-{high} | {_cores(r.cpu.watched)} / {_cores(r.cpu.me)} / "
                f"{_cores(r.cpu.other)} | {all_runs} |"
            )
    contended = _contention(raw, servers)
    lines.append("")
    if contended:
        lines.append(
            f"WARNING: other processes used more than {CONTENTION_CORES} cores during: "
            + ", ".join(contended)
            + " (results there are not trustworthy)"
        )
    else:
        lines.append(
            f"no contention seen: other processes stayed under {CONTENTION_CORES} cores "
            "in every kept measurement"
        )
    redone = [(RAW.split(" (")[0], raw.discarded)] if raw is not None else []
    redone += [(s.label, s.discarded) for s in servers]
    if any(n for _, n in redone):
        lines.append(
            "measurements discarded and re-run because of contention: "
            + ", ".join(f"{label} {n}" for label, n in redone)
        )
    return lines


def _contention(raw: RawResults | None, servers: list[ServerResults]) -> list[str]:
    """Every kept measurement during which other processes used too much CPU."""
    found = []
    if raw is not None:
        for i, run in enumerate(raw.runs, 1):
            other = run["cpu_other"]
            if other is not None and other > CONTENTION_CORES:
                found.append(f"raw run {i} ({other:.2f})")
    for server in servers:
        for c, rounds in server.all_rounds.items():
            for i, r in enumerate(rounds, 1):
                if r.cpu.other is not None and r.cpu.other > CONTENTION_CORES:
                    found.append(f"{server.label} x{c} run {i} ({r.cpu.other:.2f})")
    return found


# --- main ----------------------------------------------------------------------------------


def wait_until_quiet(max_load: float, timeout: float) -> None:
    """Sleep until the 1-minute load average is under ``max_load`` (or ``timeout`` passes)."""
    deadline = time.monotonic() + timeout
    while True:
        load = load_average()
        if load is None or load[0] < max_load:
            return
        if time.monotonic() >= deadline:
            print(f"# still busy (load {load[0]:.2f}) after waiting; going on", file=sys.stderr)
            return
        print(f"# load {load[0]:.2f} >= {max_load}: waiting 30 s", file=sys.stderr, flush=True)
        time.sleep(30)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        description="Compare inferflux's streaming throughput with llama-cpp-python's.",
    )
    parser.add_argument("--tokens", type=int, default=128, help="tokens per stream (128)")
    parser.add_argument(
        "--concurrency", default="1,4,8", help="comma-separated client counts (1,4,8)"
    )
    parser.add_argument(
        "--skip-reference",
        action="store_true",
        help="measure inferflux only (no raw loop, no llama-cpp-python server)",
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per measurement; see --pick (3)"
    )
    parser.add_argument(
        "--pick", choices=("median", "best"), default="median", help="which run to report"
    )
    parser.add_argument("--threads", type=int, default=usable_cores(), help="llama.cpp threads")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="first wait up to SECONDS for the 1-minute load average to drop under --max-load",
    )
    parser.add_argument("--max-load", type=float, default=0.5)
    parser.add_argument(
        "--retry-contended",
        type=int,
        default=5,
        metavar="R",
        help="re-run a measurement during which other processes used more than "
        f"{CONTENTION_CORES} cores, at most R times per contender (5)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        nargs="?",
        const=Path(tempfile.gettempdir()) / "inferflux-profile.txt",
        default=None,
        metavar="FILE",
        help="after measuring, run one more max-concurrency round on inferflux under py-spy "
        "and print its hot spots (collapsed stacks go to FILE)",
    )
    args = parser.parse_args(argv)
    try:
        args.levels = sorted({int(c) for c in args.concurrency.split(",") if c.strip()})
    except ValueError:
        parser.error("--concurrency takes comma-separated integers, e.g. 1,4,8")
    if not args.levels or min(args.levels) < 1:
        parser.error("--concurrency needs at least one level, each at least 1")
    if args.tokens < 2 or args.repeat < 1:
        parser.error("--tokens must be at least 2 and --repeat at least 1")
    return args


@contextlib.contextmanager
def _timed(what: str) -> Iterator[None]:
    started = time.monotonic()
    yield
    print(f"# {what}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run every contender, one at a time, and print the table."""
    args = parse_args(argv)
    if args.wait_quiet > 0:
        wait_until_quiet(args.max_load, args.wait_quiet)
    path = model_path()
    load_before = load_average()
    amx = cpu_has_amx()
    print(
        f"model: {MODEL_NAME} ({path.name}); {args.tokens} tokens per stream, greedy, EOS "
        f"suppressed; concurrency {','.join(map(str, args.levels))}; {args.pick} of "
        f"{args.repeat}",
    )
    print(
        f"machine: {cpu_name()}, {usable_cores()} usable cores, llama.cpp threads "
        f"{args.threads}, AMX {'yes (weight repacking off)' if amx else 'no (repacking on)'}; "
        f"load average {_load_text(load_before)}",
        flush=True,
    )
    raw: RawResults | None = None
    servers: list[ServerResults] = []
    if not args.skip_reference:
        with _timed("raw llama-cpp-python"):
            raw = measure_raw(
                args.tokens, args.repeat, args.threads, args.pick, args.retry_contended
            )
        if raw.error:
            print(f"# raw: FAILED: {raw.error}", file=sys.stderr)
        eog = raw.eog_tokens or [2]
        servers.append(
            run_server(
                llama_cpp_server(path, args.threads, CONTEXT_LENGTH),
                llama_server_body(args.tokens, eog),
                args,
            )
        )
    servers.append(
        run_server(
            inferflux_server(MODEL_NAME, MODEL_SOURCE, CONTEXT_LENGTH, max(8, max(args.levels))),
            inferflux_body(args.tokens),
            args,
            profile=args.profile,
        )
    )
    print(report(args, raw, servers))
    for server in servers:
        if server.profile:
            print("\n" + server.profile)
    print(f"load average at the end: {_load_text(load_average())}")
    failed = (raw is not None and raw.error) or any(s.error for s in servers)
    return 1 if failed else 0


def _load_text(load: tuple[float, float, float] | None) -> str:
    return "unknown" if load is None else " / ".join(f"{x:.2f}" for x in load) + " (1/5/15 min)"


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
    raise SystemExit(130)
