"""``inferflux``: serve models, list plugins and devices, show the configuration."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from inferflux_core.config import Settings, load_config
from inferflux_core.errors import InferfluxError
from inferflux_core.logs import configure_logging


def build_parser() -> argparse.ArgumentParser:
    """The ``inferflux`` command line."""
    parser = argparse.ArgumentParser(prog="inferflux", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the configured models over HTTP")
    _add_config_args(serve)
    serve.add_argument("--host", help="address to listen on (server.host)")
    serve.add_argument("--port", type=int, help="port to listen on (server.port)")

    plugins = commands.add_parser("plugins", help="list loaded plugins and what they register")
    _add_config_args(plugins)
    plugins.add_argument("--json", action="store_true", help="print JSON")
    plugins.add_argument(
        "--check",
        action="store_true",
        help="run every plugin's self-check; exit 1 if any fails",
    )

    devices = commands.add_parser("devices", help="list devices and whether they are present")
    _add_config_args(devices)
    devices.add_argument("--json", action="store_true", help="print JSON")

    config = commands.add_parser("config", help="print the effective configuration")
    _add_config_args(config)

    new_plugin = commands.add_parser(
        "new-plugin", help="write a new plugin package that passes the conformance kit"
    )
    from inferflux_core.scaffold import KINDS

    new_plugin.add_argument("kind", choices=list(KINDS), help="what the plugin provides")
    new_plugin.add_argument("name", help="its registered name: lower-case letters, digits, _")
    new_plugin.add_argument(
        "--dir", default=".", help="where to create the inferflux-NAME folder (default: here)"
    )

    from inferflux_core.cli.admin import add_admin_parser
    from inferflux_core.cli.plan import add_plan_parser

    add_admin_parser(commands, _add_config_args)
    from inferflux_core.cli.models_cli import add_models_parsers

    add_models_parsers(commands, _add_config_args)
    add_plan_parser(commands, _add_config_args)
    return parser


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", help="YAML configuration file")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; errors are one clear message and exit status 2, not a traceback."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "new-plugin":
            return _new_plugin(args)
        settings = _settings(args)
        configure_logging(settings.logging.format, settings.server.log_level)
        return int(COMMANDS[args.command](args, settings) or 0)
    except InferfluxError as exc:
        print(f"inferflux: error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    server = {k: v for k in ("host", "port") if (v := getattr(args, k, None)) is not None}
    settings = load_config(args.config)
    if server:
        merged = settings.model_dump()
        merged["server"].update(server)
        overrides = merged
        settings = load_config(args.config, **overrides)
    return settings


def _new_plugin(args: argparse.Namespace) -> int:
    from pathlib import Path

    from inferflux_core.scaffold import create_plugin

    target = create_plugin(args.kind, args.name, Path(args.dir))
    print(f"created {target}")
    print(f"next: pip install -e {target} && python -m pytest {target / 'tests'}")
    return 0


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from inferflux_core.cli.serve import serve

    serve(settings)
    return 0


def _plugins(args: argparse.Namespace, settings: Settings) -> int:
    from inferflux_core.plugins import PluginHost

    host = PluginHost(autoload=settings.plugins.autoload, disable=settings.plugins.disable)
    if args.check:
        from inferflux_core.cli.plugin_check import check_plugins, print_checks

        return print_checks(check_plugins(host), as_json=args.json)
    records = sorted(host.records.values(), key=lambda r: r.name)
    if args.json:
        print(json.dumps([_record_dict(r) for r in records], indent=2))
        return 0
    from inferflux_core.cli.tables import print_table

    rows = [
        [
            record.name,
            record.distribution,
            record.version,
            "\n".join(
                f"{family}: {', '.join(names)}" for family, names in record.registered.items()
            ),
            ", ".join(record.hooks),
        ]
        for record in records
    ]
    print_table(["plugin", "distribution", "version", "registers", "hooks"], rows)
    return 0


def _record_dict(record: Any) -> dict[str, Any]:
    return {
        "name": record.name,
        "distribution": record.distribution,
        "version": record.version,
        "hooks": record.hooks,
        "registered": record.registered,
    }


def _devices(args: argparse.Namespace, settings: Settings) -> int:
    from inferflux_core.engine.devices import detect_devices
    from inferflux_core.plugins import PluginHost

    host = PluginHost(autoload=settings.plugins.autoload, disable=settings.plugins.disable)
    found = detect_devices(host)
    if args.json:
        devices = [_device_dict(context.priority, info) for context, info in found]
        print(json.dumps(devices, indent=2, default=str))
        return 0
    from inferflux_core.cli.tables import print_table

    rows = [
        [
            info.kind,
            str(context.priority),
            "present" if info.present else f"not present ({info.reason})",
            info.name or "",
        ]
        for context, info in found
    ]
    print_table(["device", "priority", "state", "name"], rows)
    return 0


def _device_dict(priority: int, info: Any) -> dict[str, Any]:
    import dataclasses

    return {"priority": priority, **dataclasses.asdict(info)}


def _config(args: argparse.Namespace, settings: Settings) -> int:
    import yaml

    from inferflux_core.cli.config_view import effective_config
    from inferflux_core.plugins import PluginHost

    host = PluginHost(autoload=settings.plugins.autoload, disable=settings.plugins.disable)
    print(yaml.safe_dump(effective_config(settings, host), sort_keys=False))
    return 0


def _admin(args: argparse.Namespace, settings: Settings) -> int:
    from inferflux_core.auth.access import open_policy_store
    from inferflux_core.auth.policy_admin import PolicyAdmin
    from inferflux_core.cli.admin import StoreBackend, run_admin
    from inferflux_core.plugins import PluginHost

    host = PluginHost(autoload=settings.plugins.autoload, disable=settings.plugins.disable)
    store = open_policy_store(settings, host)
    try:
        if not store.persistent:
            raise InferfluxError(
                f"policy.store is {settings.policy.store!r}: its keys live inside the server "
                "process; use `inferctl admin ...` against the running server, or configure "
                "a persistent store (policy.store: encrypted_file)"
            )
        return run_admin(args, StoreBackend(PolicyAdmin(store)))
    finally:
        store.close()


def _models(args: argparse.Namespace, settings: Settings) -> int:
    from inferflux_core.cli import models_cli

    verbs = {"pull": models_cli.run_pull, "list": models_cli.run_list}
    verbs.update(show=models_cli.run_show, rm=models_cli.run_rm)
    return verbs[args.command](args, settings)


def _plan(args: argparse.Namespace, settings: Settings) -> int:
    from inferflux_core.cli.plan import run_plan

    return run_plan(args, settings)


COMMANDS = {
    "serve": _serve,
    "plugins": _plugins,
    "devices": _devices,
    "config": _config,
    "admin": _admin,
    **dict.fromkeys(("pull", "list", "show", "rm"), _models),
    "plan": _plan,
}


if __name__ == "__main__":
    sys.exit(main())
