"""Speculative decoding at one stream: tok/s with and without drafts, on input-grounded tasks.

One inferflux server per method (``ngram`` prompt lookup; ``draft_model`` with the default
model drafting for itself, which exercises the path but cannot be faster: its draft model costs
as much as the model). Each task's greedy request runs on that server alternately with
``speculative: false`` and ``speculative: true`` (``--repeat`` pairs), one request at a time,
so both halves of a pair see the same machine. For each task the table gives the decode speed
(completion tokens after the first, over the time after the first token) without and with
drafts, the speed-up (median over pairs), the share of drafted tokens accepted (from the
server's ``inferflux_spec_decode_*`` counters) and whether the outputs were identical.

Tasks: ``rewrite`` and ``proofread`` (correct the spelling of a given paragraph), ``tense``
(put a given text in the past tense), ``extract`` and ``invoice`` (fields of a given text as
JSON), ``code`` (rename a variable in a given function), and ``story`` (a free story, nothing
to copy from: the control).

    .venv/bin/python benchmarks/speculative_decoding.py
    .venv/bin/python benchmarks/speculative_decoding.py --methods ngram --num-tokens 8 --repeat 5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from dataclasses import dataclass, field
from typing import Any

import httpx
from _bench_client import read_chat
from _cpu import load_average
from _servers import ServerProcess, inferflux_models_server, running
from _workload import MODEL_NAME, MODEL_SOURCE, cpu_name, usable_cores

PARAGRAPH = (
    "The old lighthouse stood at the edge of the cliff for more then a hundred years. Every "
    "night its keeper climbed the two hundred steps to light the lamp, and every morning he "
    "wrote the wheather in a small leather book. Ships passing the bay saw the beam and knew "
    "the rocks were near. When the keeper retired, the village decided to keep the lamp "
    "burning, and childern from the school took turns to climb the steps with him once a week."
)
RECORD = (
    "Dear support, my name is Claire Dubois and I ordered a walnut bookshelf (order number "
    "A-48213) on 3 March. It was delivered to 12 rue des Lilas, 69003 Lyon, but one shelf was "
    "cracked. You can reach me at claire.dubois@example.org or on +33 4 72 00 00 00."
)
MEETING = (
    "Our team meets every monday at nine in the large confrence room on the third floor. Please "
    "bring your laptop and a list of the tasks you finished last week. If you can not attend, "
    "send a short note to your manager before the meeting starts, so that somone else can "
    "present your work. Coffee and pastries are provided by the office, but feel free to bring "
    "your own lunch."
)
ROUTINE = (
    "Maria walks to the market every morning. She buys fresh bread, a bag of apples and some "
    "cheese from the farmer at the corner. Then she sits on a bench in the park, reads the "
    "newspaper and feeds the pigeons. At ten o'clock she goes home and starts her work."
)
INVOICE = (
    "Invoice INV-2024-0917 issued on 14 June 2024 by Northwind Traders Ltd, 45 Harbour Road, "
    "Bristol, to Contoso Cafe, 8 Market Street, Leeds. Items: 12 bags of coffee beans at 18.50 "
    "each, 4 boxes of paper cups at 9.75 each. Total due: 261.00 GBP within 30 days."
)
CODE = """def total_price(items, tax_rate):
    subtotal = 0
    for item in items:
        subtotal += item.price * item.quantity
    tax = subtotal * tax_rate
    return subtotal + tax
"""

#: The tasks: a name and the user message.
TASKS = {
    "rewrite": f"Rewrite this paragraph with its spelling mistakes corrected:\n\n{PARAGRAPH}",
    "extract": (
        "Extract the customer's name, order number, address, email and phone from this "
        f"message, as a JSON object:\n\n{RECORD}"
    ),
    "proofread": f"Rewrite this paragraph with its spelling mistakes corrected:\n\n{MEETING}",
    "tense": f"Rewrite the following text in the past tense:\n\n{ROUTINE}",
    "invoice": (
        "From this invoice, extract the seller, buyer, invoice number, date, total and currency "
        f"as a JSON object:\n\n{INVOICE}"
    ),
    "code": f"Rename the variable `subtotal` to `net` in this function:\n\n{CODE}",
    "story": "Write a story about a lighthouse keeper.",
}

SPEC_COUNTERS = (
    "inferflux_spec_decode_num_draft_tokens_total",
    "inferflux_spec_decode_num_accepted_tokens_total",
)


@dataclass
class Generation:
    """One streamed answer: its text, completion tokens, and timing."""

    text: str
    tokens: int
    ttft: float
    seconds: float

    @property
    def decode_tok_s(self) -> float:
        """Completion tokens after the first, over the time after the first token."""
        after = self.seconds - self.ttft
        return (self.tokens - 1) / after if after > 0 and self.tokens > 1 else 0.0


@dataclass
class TaskResult:
    """A task's pairs on one server: generations without and with drafts, counters."""

    plain: list[Generation] = field(default_factory=list)
    drafted: list[Generation] = field(default_factory=list)
    draft_tokens: float = 0.0
    accepted_tokens: float = 0.0


async def generate(
    client: httpx.AsyncClient, content: str, args: argparse.Namespace, *, speculative: bool
) -> Generation:
    """One greedy streamed chat completion of ``content``."""
    body = {
        "model": MODEL_NAME,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": args.tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "speculative": speculative,
    }
    reply = await read_chat(client, body)
    tokens = reply.usage.get("completion_tokens", 0)
    return Generation(reply.text, tokens, reply.ttft, reply.done - reply.sent)


async def counters(client: httpx.AsyncClient) -> dict[str, float]:
    """The server's speculative-decoding counters, summed over their labels."""
    text = (await client.get("/metrics")).text
    totals = dict.fromkeys(SPEC_COUNTERS, 0.0)
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in totals:
            totals[name] += float(line.rsplit(" ", 1)[1])
    return totals


async def run_tasks(server: ServerProcess, args: argparse.Namespace) -> dict[str, TaskResult]:
    """Every task, ``args.repeat`` pairs each (without drafts, then with)."""
    results: dict[str, TaskResult] = {}
    async with httpx.AsyncClient(
        base_url=server.base_url, headers=server.headers, timeout=httpx.Timeout(600.0)
    ) as client:
        await generate(client, "Hello", args, speculative=True)  # warm-up
        for name in args.tasks:
            result = results[name] = TaskResult()
            for _ in range(args.repeat):
                result.plain.append(await generate(client, TASKS[name], args, speculative=False))
                before = await counters(client)
                result.drafted.append(await generate(client, TASKS[name], args, speculative=True))
                after = await counters(client)
                draft, accepted = SPEC_COUNTERS
                result.draft_tokens += after[draft] - before[draft]
                result.accepted_tokens += after[accepted] - before[accepted]
    return results


def speculative_server(method: str, args: argparse.Namespace) -> ServerProcess:
    """inferflux with one model that drafts by ``method`` (prefix reuse off, so each request
    of a pair prefills its prompt the same way)."""
    speculative: dict[str, Any] = {"method": method, "num_tokens": args.num_tokens}
    if method == "ngram":
        speculative.update(ngram_min=args.ngram_min, ngram_max=args.ngram_max)
    if method == "draft_model":
        speculative["draft_model"] = MODEL_SOURCE
    model = {
        "name": MODEL_NAME,
        "source": MODEL_SOURCE,
        "context_length": 4096,
        "max_sequences": 1,
        "options": {"threads": args.threads},
        "speculative": speculative,
    }
    env = {"INFERFLUX_SCHEDULER__PREFIX_REUSE": "false"}
    return inferflux_models_server(f"inferflux {method}", [model], env)


def table(method: str, results: dict[str, TaskResult]) -> str:
    """One row per task: decode tok/s without and with drafts, speed-up, acceptance, same."""
    lines = [
        f"#### {method}\n",
        "| task | tokens | tok/s without | tok/s with | speed-up | drafts accepted | same output |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        plain = statistics.median(g.decode_tok_s for g in r.plain)
        drafted = statistics.median(g.decode_tok_s for g in r.drafted)
        ratios = [
            d.decode_tok_s / p.decode_tok_s
            for p, d in zip(r.plain, r.drafted, strict=True)
            if p.decode_tok_s
        ]
        speedup = statistics.median(ratios) if ratios else 0.0
        rate = r.accepted_tokens / r.draft_tokens if r.draft_tokens else 0.0
        same = sum(p.text == d.text for p, d in zip(r.plain, r.drafted, strict=True))
        tokens = statistics.median(g.tokens for g in r.drafted)
        lines.append(
            f"| {name} | {tokens:.0f} | {plain:.1f} | {drafted:.1f} | {speedup:.2f}x | "
            f"{rate:.0%} | {same}/{len(r.plain)} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="ngram,draft_model", help="e.g. ngram,draft_model")
    parser.add_argument("--tasks", default=",".join(TASKS), help="e.g. rewrite,extract")
    parser.add_argument("--tokens", type=int, default=160, help="max tokens per answer")
    parser.add_argument("--num-tokens", type=int, default=8, help="most drafts per step")
    parser.add_argument("--ngram-min", type=int, default=2, help="shortest suffix looked up")
    parser.add_argument("--ngram-max", type=int, default=3, help="longest suffix looked up")
    parser.add_argument("--repeat", type=int, default=3, help="pairs per task")
    parser.add_argument("--threads", type=int, default=usable_cores())
    args = parser.parse_args(argv)
    args.methods = [m for m in args.methods.split(",") if m]
    args.tasks = [t for t in args.tasks.split(",") if t]
    unknown = [t for t in args.tasks if t not in TASKS]
    if unknown:
        parser.error(f"unknown tasks {unknown}; choose from {list(TASKS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"## Speculative decoding at one stream, on {cpu_name()}")
    print(
        f"{args.threads} threads, greedy, up to {args.tokens} tokens, up to {args.num_tokens} "
        f"drafts per step (ngram {args.ngram_min}..{args.ngram_max}), "
        f"median of {args.repeat} pairs, load before: {load_average()}\n"
    )
    for method in args.methods:
        server = speculative_server(method, args)
        print(f"# {server.label}", file=sys.stderr, flush=True)
        try:
            with running(server):
                results = asyncio.run(run_tasks(server, args))
        except Exception as exc:
            print(f"#### {method}\n\nfailed: {str(exc).splitlines()[0]}\n")
            continue
        print(table(method, results))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
