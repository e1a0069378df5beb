"""``inferctl``: a client for an inferflux (or any OpenAI-compatible) server.

``inferctl chat`` with no message opens a conversation (``inferflux_core.cli.chat_session``);
``--json`` prints what a script wants; docs/inferctl.md has the rest.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

import httpx

from inferflux_core.cli.admin import HttpBackend, add_admin_parser, print_error, run_admin
from inferflux_core.cli.chat_session import ChatSession, run_session
from inferflux_core.cli.ctl_client import (
    DEFAULT_SYSTEM,
    chat_delta,
    completion_delta,
    default_model,
    get_json,
    post_json,
    sampling_body,
    stream_text,
)
from inferflux_core.cli.inferctl_models import VERBS, add_model_verbs, run_model_verb
from inferflux_core.cli.tables import print_table
from inferflux_core.errors import InferfluxError

DEFAULT_URL = os.environ.get("INFERFLUX_URL", "http://127.0.0.1:8000")


def build_parser() -> argparse.ArgumentParser:
    """The ``inferctl`` command line."""
    parser = argparse.ArgumentParser(prog="inferctl", description=__doc__)
    parser.add_argument("--url", default=DEFAULT_URL, help="server base URL (INFERFLUX_URL)")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("INFERFLUX_API_KEY"),
        help="API key (INFERFLUX_API_KEY); `inferflux serve` prints a development key",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    models = commands.add_parser("models", help="list the server's models")
    _json_arg(models)
    chat = commands.add_parser(
        "chat", help="send one message and stream the reply; no message: a conversation"
    )
    chat.add_argument("message", nargs="?", help="omit for an interactive session")
    chat.add_argument(
        "--system",
        default=DEFAULT_SYSTEM,
        help=f'the system message (default: "{DEFAULT_SYSTEM}"; "" for none)',
    )
    _generation_args(chat)
    complete = commands.add_parser("complete", help="continue a raw prompt (completions API)")
    complete.add_argument("prompt")
    _generation_args(complete)
    add_admin_parser(commands)
    add_model_verbs(commands)
    return parser


def _json_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON (for scripts)")


def _generation_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="model id (default: the server's first model)")
    parser.add_argument("--max-tokens", type=int, help="default: up to the model's limit")
    help_default = "default: the model's own (GET /v1/models/ID shows them)"
    parser.add_argument("--temperature", type=float, help=help_default)
    parser.add_argument("--top-p", type=float, help=help_default)
    parser.add_argument("--seed", type=int, help="for reproducible sampling")
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the whole response object as JSON instead of streaming text",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run one client command."""
    args = build_parser().parse_args(argv)
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    try:
        with httpx.Client(base_url=args.url, headers=headers, timeout=600) as client:
            if args.command == "models":
                return _models(client, args)
            if args.command == "admin":
                return run_admin(args, HttpBackend(client))
            if args.command in VERBS:
                return run_model_verb(client, args)
            return _generate(client, args)
    except InferfluxError as exc:
        return print_error("inferctl", exc)
    except httpx.HTTPError as exc:
        print(f"inferctl: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _models(client: httpx.Client, args: argparse.Namespace) -> int:
    listed = get_json(client, "/v1/models")
    if args.json:
        print(json.dumps(listed, indent=2))
        return 0
    rows = [
        [
            model["id"],
            str(model.get("max_model_len", "")),
            _defaults_text(model.get("sampling_defaults") or {}),
        ]
        for model in listed["data"]
    ]
    print_table(["model", "max_model_len", "sampling_defaults"], rows)
    return 0


def _defaults_text(defaults: dict[str, object]) -> str:
    return ", ".join(f"{name}={value}" for name, value in defaults.items())


def _generate(client: httpx.Client, args: argparse.Namespace) -> int:
    """``chat`` (one message, or a session) and ``complete``."""
    model = args.model or default_model(client)
    sampling = sampling_body(
        max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p, seed=args.seed
    )
    if args.command == "complete":
        path, delta = "/v1/completions", completion_delta
        body: dict[str, object] = {"model": model, "prompt": args.prompt, **sampling}
    else:
        session = ChatSession(client, model, args.system or None, sampling)
        if args.message is None:
            if args.json:
                raise InferfluxError("chat --json needs a message")
            return run_session(session)
        path, delta = "/v1/chat/completions", chat_delta
        body = {"model": model, "messages": session.messages(args.message), **sampling}
    if args.json:
        print(json.dumps(post_json(client, path, body), indent=2))
        return 0
    for text in stream_text(client, path, body, delta):
        print(text, end="", flush=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
