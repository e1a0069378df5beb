"""``inferctl``: a small client for an inferflux (or any OpenAI-compatible) server."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

import httpx

from inferflux_core.cli.admin import HttpBackend, add_admin_parser, print_error, run_admin
from inferflux_core.cli.inferctl_models import VERBS, add_model_verbs, run_model_verb
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
    commands.add_parser("models", help="list the server's models")
    chat = commands.add_parser("chat", help="send one chat message and stream the reply")
    chat.add_argument("message")
    chat.add_argument("--model", help="model id (default: the server's first model)")
    chat.add_argument("--max-tokens", type=int, default=256)
    chat.add_argument("--temperature", type=float, default=0.7)
    add_admin_parser(commands)
    add_model_verbs(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one client command."""
    args = build_parser().parse_args(argv)
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    try:
        with httpx.Client(base_url=args.url, headers=headers, timeout=600) as client:
            if args.command == "models":
                return _models(client)
            if args.command == "admin":
                return run_admin(args, HttpBackend(client))
            if args.command in VERBS:
                return run_model_verb(client, args)
            return _chat(client, args)
    except InferfluxError as exc:
        return print_error("inferctl", exc)
    except httpx.HTTPError as exc:
        print(f"inferctl: error: {exc}", file=sys.stderr)
        return 1


def _models(client: httpx.Client) -> int:
    response = client.get("/v1/models")
    if response.is_error:
        return _fail(response)
    for model in response.json()["data"]:
        print(model["id"])
    return 0


def _chat(client: httpx.Client, args: argparse.Namespace) -> int:
    model = args.model
    if model is None:
        models = client.get("/v1/models")
        if models.is_error:
            return _fail(models)
        listed = models.json().get("data") or []
        if not listed:
            print("inferctl: error: the server lists no model this key may use", file=sys.stderr)
            return 1
        model = listed[0]["id"]
    body = {
        "model": model,
        "messages": [{"role": "user", "content": args.message}],
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "stream": True,
    }
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.is_error:
            response.read()
            return _fail(response)
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            for choice in chunk.get("choices", []):
                print(choice["delta"].get("content") or "", end="", flush=True)
    print()
    return 0


def _fail(response: httpx.Response) -> int:
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text
    hint = " (pass --api-key or set INFERFLUX_API_KEY)" if response.status_code == 401 else ""
    print(f"inferctl: error: {response.status_code}: {message}{hint}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
