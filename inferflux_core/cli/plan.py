"""``inferflux plan MODEL``: what a model takes in memory, and how many sequences fit.

MODEL is a configured model's name (its source, context, sequences, options and device
apply) or a source (a path, ``pypi:DIST``, or any form a plugin resolves). ``--context``,
``--sequences`` and ``--device`` override. ``--probe`` loads the model through the engine and
measures decode speed (:mod:`inferflux_core.cli.plan_probe`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from inferflux_core.config import ModelConfig, Settings
from inferflux_core.contracts import DeviceInfo
from inferflux_core.engine.device_memory import format_bytes, free_memory
from inferflux_core.engine.devices import detect_devices, select_device
from inferflux_core.engine.memory import KV_TYPES, ModelMemory, check_fits
from inferflux_core.engine.memory_check import context_settings
from inferflux_core.errors import ConfigError
from inferflux_core.plugins import PluginHost
from inferflux_core.sources import resolve_model_source

#: Most sequences ``plan`` looks for (``models[].max_sequences`` allows no more).
MAX_PLANNED_SEQUENCES = 256
#: Most sequences the probe runs at once.
MAX_PROBE_SEQUENCES = 8


def add_plan_parser(
    commands: Any, add_config_args: Callable[[argparse.ArgumentParser], None]
) -> None:
    """Add ``plan`` to the ``inferflux`` command line."""
    plan = commands.add_parser(
        "plan", help="estimate a model's memory and how many sequences fit on a device"
    )
    add_config_args(plan)
    plan.add_argument("model", help="a configured model's name, or a source (path, pypi:DIST)")
    plan.add_argument("--device", help="cpu, cuda, rocm, metal or auto (default: the model's)")
    plan.add_argument("--context", type=int, help="tokens per sequence (models[].context_length)")
    plan.add_argument("--sequences", type=int, help="sequences at once (models[].max_sequences)")
    plan.add_argument(
        "--kv-type", default="f16", choices=list(KV_TYPES), help="KV cache type (default f16)"
    )
    plan.add_argument(
        "--probe",
        action="store_true",
        help="load the model and measure decode tok/s at 1 and at the most sequences (<= 8)",
    )
    plan.add_argument(
        "--probe-tokens", type=int, default=32, help="tokens each probe request generates"
    )
    plan.add_argument("--json", action="store_true", help="print JSON")


def run_plan(args: argparse.Namespace, settings: Settings) -> int:
    """Print the plan; with ``--probe``, load the model and measure it too."""
    host = PluginHost(autoload=settings.plugins.autoload, disable=settings.plugins.disable)
    config = planned_config(settings, args.model, args.device, args.context, args.sequences)
    plan = make_plan(config, host, args.kv_type)
    if args.probe:
        from inferflux_core.cli.plan_probe import probe

        if not 1 <= args.probe_tokens <= 4096:
            raise ConfigError("--probe-tokens must be from 1 to 4096")
        fit = plan["max_sequences_that_fit"]
        sequences = min(config.max_sequences, MAX_PROBE_SEQUENCES)
        if fit is not None:
            sequences = min(sequences, fit)
        if fit == 0:
            _refuse(plan, config)
        plan["probe"] = probe(config, settings, host, max(1, sequences), args.probe_tokens)
    print_plan(plan, as_json=args.json)
    return 0


def planned_config(
    settings: Settings,
    model: str,
    device: str | None,
    context: int | None,
    sequences: int | None,
) -> ModelConfig:
    """The configured model called ``model`` (or a new one with ``model`` as its source),
    with the command line's overrides, validated as the config file would be."""
    configured = {m.name: m for m in settings.models}
    base = configured.get(model) or ModelConfig(name=_name_of(model), source=model)
    update: dict[str, Any] = {
        key: value
        for key, value in (
            ("device", device),
            ("context_length", context),
            ("max_sequences", sequences),
        )
        if value is not None
    }
    try:
        return ModelConfig.model_validate({**base.model_dump(), **update})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        raise ConfigError(f"cannot plan {model!r}: {problems}") from None


def make_plan(config: ModelConfig, host: PluginHost, kv_type: str = "f16") -> dict[str, Any]:
    """The plan as a JSON-ready dict: the estimate's figures, the device's free memory, and
    the most sequences of ``config.context_length`` tokens that fit there."""
    path = resolve_model_source(config.source, host)
    device = _device(config, host)
    memory = ModelMemory.from_file(path)
    settings = replace(context_settings(config), kv_type=kv_type)
    estimate = memory.estimate(config.context_length, config.max_sequences, settings)
    free = free_memory(device)
    fit = (
        memory.most_sequences(config.context_length, free, settings, MAX_PLANNED_SEQUENCES)
        if free is not None
        else None
    )
    return {
        "model": config.name,
        "source": config.source,
        "path": str(path),
        "architecture": estimate.architecture,
        "device": {"kind": device.kind, "name": device.name},
        "context_length": config.context_length,
        "max_sequences": config.max_sequences,
        "kv_type": kv_type,
        "weights_bytes": estimate.weights_bytes,
        "kv_bytes_per_token": estimate.kv_bytes_per_token,
        "kv_bytes": estimate.kv_bytes,
        "compute_bytes": estimate.compute_bytes,
        "output_bytes": estimate.output_bytes,
        "overhead_bytes": estimate.overhead_bytes,
        "total_bytes": estimate.total_bytes,
        "free_bytes": free,
        "fits": None if free is None else estimate.total_bytes <= free,
        "max_sequences_that_fit": fit,
        "probe": None,
        "_estimate": estimate,
    }


def plan_rows(plan: dict[str, Any]) -> list[tuple[str, str]]:
    """The plan as (label, value) rows for people."""
    device = plan["device"]
    free, fit = plan["free_bytes"], plan["max_sequences_that_fit"]
    context = plan["context_length"]
    rows = [
        ("model", plan["model"]),
        ("file", plan["path"]),
        ("architecture", plan["architecture"]),
        ("device", f"{device['kind']} ({device['name']})" if device["name"] else device["kind"]),
        ("plan", f"{_sequences(plan['max_sequences'])} x {context} tokens, KV {plan['kv_type']}"),
        ("weights", format_bytes(plan["weights_bytes"])),
        ("KV per token", format_bytes(plan["kv_bytes_per_token"])),
        (f"KV at {plan['max_sequences']} x {context}", format_bytes(plan["kv_bytes"])),
        ("compute buffers", format_bytes(plan["compute_bytes"] + plan["output_bytes"])),
        ("overhead", format_bytes(plan["overhead_bytes"])),
        ("total", format_bytes(plan["total_bytes"])),
        ("free on device", "unknown" if free is None else format_bytes(free)),
        ("fits", "unknown" if plan["fits"] is None else "yes" if plan["fits"] else "no"),
        (
            f"most sequences at {context}",
            "unknown" if fit is None else f"{fit}{'+' if fit == MAX_PLANNED_SEQUENCES else ''}",
        ),
    ]
    for result in plan["probe"] or ():
        rows.append(
            (
                f"decode at {_sequences(result['sequences'])}",
                f"{result['tokens_per_second']:.1f} tok/s",
            )
        )
    return rows


def print_plan(plan: dict[str, Any], *, as_json: bool = False) -> None:
    """JSON, a rich table on a terminal, or plain columns to a pipe (never truncated)."""
    if as_json:
        print(json.dumps({k: v for k, v in plan.items() if not k.startswith("_")}, indent=2))
        return
    rows = plan_rows(plan)
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(show_header=False, title=f"inferflux plan {plan['model']}")
        table.add_column(no_wrap=True)
        table.add_column(overflow="fold")  # a long path wraps; nothing is cut
        for label, value in rows:
            table.add_row(label, value, style="bold" if label == "total" else None)
        Console().print(table, crop=False)
        return
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")


def _sequences(count: int) -> str:
    return f"{count} sequence{'' if count == 1 else 's'}"


def _refuse(plan: dict[str, Any], config: ModelConfig) -> None:
    device = plan["device"]["kind"]
    check_fits(plan["_estimate"], plan["free_bytes"], model=config.name, device=f"the {device}")


def _device(config: ModelConfig, host: PluginHost) -> DeviceInfo:
    """The device the plan is for: ``config.device`` among every detected one."""
    detected = [info for _, info in detect_devices(host)]
    kinds = tuple(info.kind for info in detected)
    return select_device(host, config.device, kinds, detected)


def _name_of(source: str) -> str:
    """A model name for a bare source: the file's stem, or the distribution's name."""
    tail = source.rsplit(":", 1)[-1]
    return Path(tail).stem or tail or "model"
