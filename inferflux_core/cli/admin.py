"""``inferflux admin ...`` (on the configured policy store) and ``inferctl admin ...`` (through
a running server's admin API): the same commands, the same validation, JSON out.

    admin keys create --name NAME [--role R]... [--scope S]... [--model M]...
                      [--expires-in SECONDS] [--rpm N] [--tpm N] [--max-priority N]
    admin keys list [--json] | show ID | revoke ID
    admin keys update ID [--name N] [--role R]... [--scope S]... [--model M]... [--rpm N] [--tpm N]
                      [--max-priority N]
    admin roles list [--json] | set NAME --scope S... | delete NAME
    admin limits show | set [--rpm N] [--tpm N]
    admin policy show | import FILE

``list`` prints a table (tab-separated to a pipe, ``inferflux_core.cli.tables``), or JSON with
``--json``; every other command prints its JSON result.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Protocol

import httpx

from inferflux_core.auth.policy_admin import KeyCreate, KeyUpdate, PolicyAdmin, RoleBody
from inferflux_core.contracts import RateLimits
from inferflux_core.errors import InferfluxError
from inferflux_core.protocol.common import parse_body


class AdminBackend(Protocol):
    """Where admin commands go: the store itself, or a server's admin API."""

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """Perform ``method path`` (admin API paths, without ``/v1/admin``)."""


class StoreBackend:
    """Runs admin commands on a policy store directly (``inferflux admin``)."""

    def __init__(self, admin: PolicyAdmin) -> None:
        self._admin = admin

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """Dispatch like the admin API would."""
        a = self._admin
        parts = path.strip("/").split("/")
        match method, parts:
            case "GET", ["keys"]:
                return {"object": "list", "data": a.list_keys()}
            case "POST", ["keys"]:
                return a.create_key(parse_body(KeyCreate, body))
            case "GET", ["keys", key_id]:
                return a.get_key(key_id)
            case "PATCH", ["keys", key_id]:
                return a.update_key(key_id, parse_body(KeyUpdate, body))
            case "POST", ["keys", key_id, "revoke"]:
                return a.revoke_key(key_id)
            case "GET", ["roles"]:
                return {"roles": a.roles()}
            case "PUT", ["roles", name]:
                return a.set_role(name, parse_body(RoleBody, body))
            case "DELETE", ["roles", name]:
                a.delete_role(name)
                return {"deleted": name}
            case "GET", ["limits"]:
                return a.limits()
            case "PUT", ["limits"]:
                return a.set_limits(parse_body(RateLimits, body))
            case "GET", ["policy"]:
                return a.export()
            case "PUT", ["policy"]:
                return a.import_policy(body)
        raise InferfluxError(f"no admin operation {method} {path}")


class HttpBackend:
    """Runs admin commands through a server's ``/v1/admin`` API (``inferctl admin``)."""

    def __init__(self, client: httpx.Client) -> None:
        self._client = client

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """The API's answer; InferfluxError with the server's message on an error status."""
        response = self._client.request(method, "/v1/admin" + path, json=body)
        if response.is_error:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text
            raise InferfluxError(f"{response.status_code}: {message}")
        return response.json()


def add_admin_parser(commands: Any, config_args: Any = None) -> None:
    """Add ``admin`` and its sub-commands to a parser's sub-commands."""
    admin = commands.add_parser("admin", help="manage API keys, roles, limits and the policy")
    if config_args is not None:
        config_args(admin)
    groups = admin.add_subparsers(dest="admin_group", required=True)

    keys = groups.add_parser("keys", help="API keys").add_subparsers(dest="action", required=True)
    create = keys.add_parser("create", help="create a key (printed once, never stored)")
    create.add_argument("--name", required=True)
    _grant_args(create)
    create.add_argument("--expires-in", type=float, help="seconds until the key expires")
    _json_arg(keys.add_parser("list", help="every key, without secrets"))
    for action in ("show", "revoke"):
        keys.add_parser(action, help=f"{action} one key").add_argument("key_id")
    update = keys.add_parser("update", help="change a key's grants or limits")
    update.add_argument("key_id")
    update.add_argument("--name")
    _grant_args(update)

    roles = groups.add_parser("roles", help="roles").add_subparsers(dest="action", required=True)
    _json_arg(roles.add_parser("list", help="every role and its scopes"))
    set_role = roles.add_parser("set", help="create or replace a custom role")
    set_role.add_argument("name")
    set_role.add_argument("--scope", action="append", required=True, dest="scopes")
    roles.add_parser("delete", help="delete a custom role").add_argument("name")

    limits = groups.add_parser("limits", help="default rate limits")
    limit_actions = limits.add_subparsers(dest="action", required=True)
    limit_actions.add_parser("show", help="the default limits")
    set_limits = limit_actions.add_parser("set", help="replace the default limits")
    _limit_args(set_limits)

    policy = groups.add_parser("policy", help="the whole policy document")
    policy_actions = policy.add_subparsers(dest="action", required=True)
    policy_actions.add_parser("show", help="export the policy as JSON (hashes, never keys)")
    policy_actions.add_parser("import", help="replace the policy").add_argument("file")


def _json_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON, not a table")


def _grant_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--role", action="append", dest="roles", help="repeatable")
    parser.add_argument("--scope", action="append", dest="scopes", help="repeatable")
    parser.add_argument("--model", action="append", dest="models", help="repeatable")
    parser.add_argument(
        "--max-priority", type=int, help="the highest request priority the key may ask for"
    )
    parser.add_argument(
        "--project", help="the project the key belongs to (it sees that project's models)"
    )
    _limit_args(parser)


def _limit_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rpm", type=int, help="requests per minute")
    parser.add_argument("--tpm", type=int, help="tokens (prompt + completion) per minute")


def run_admin(args: argparse.Namespace, backend: AdminBackend) -> int:
    """Run one admin command and print its JSON result."""
    group, action = args.admin_group, args.action
    call = backend.call
    if group == "keys":
        if action == "create":
            body = {"name": args.name, **_grants(args)}
            if args.expires_in is not None:
                body["expires_in"] = args.expires_in
            result = call("POST", "/keys", body)
        elif action == "list":
            result = call("GET", "/keys")
        elif action == "show":
            result = call("GET", f"/keys/{args.key_id}")
        elif action == "revoke":
            result = call("POST", f"/keys/{args.key_id}/revoke")
        else:
            changes = _grants(args) | ({"name": args.name} if args.name else {})
            result = call("PATCH", f"/keys/{args.key_id}", changes)
    elif group == "roles":
        if action == "list":
            result = call("GET", "/roles")
        elif action == "set":
            result = call("PUT", f"/roles/{args.name}", {"scopes": args.scopes})
        else:
            result = call("DELETE", f"/roles/{args.name}")
    elif group == "limits":
        if action == "show":
            result = call("GET", "/limits")
        else:
            result = call("PUT", "/limits", _limits(args))
    elif action == "show":
        result = call("GET", "/policy")
    else:
        result = call("PUT", "/policy", _read_json(Path(args.file)))
    if action == "list" and not args.json:
        _print_list(group, result)
    else:
        print(json.dumps(result, indent=2))
    return 0


def _print_list(group: str, result: Any) -> None:
    """``keys list`` / ``roles list`` as a table: one row a key (or a role)."""
    from inferflux_core.cli.tables import print_table

    if group == "roles":
        roles = result["roles"]
        print_table(["role", "scopes"], [[name, ", ".join(roles[name])] for name in roles])
        return
    records = result["data"]
    columns = list(dict.fromkeys(name for record in records for name in record)) or ["id"]
    print_table(columns, [[_cell(record.get(name)) for name in columns] for record in records])


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    return json.dumps(value) if isinstance(value, dict) else str(value)


def _grants(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {
        name: getattr(args, name)
        for name in ("roles", "scopes", "models", "max_priority", "project")
        if getattr(args, name) is not None
    }
    limits = _limits(args)
    if limits:
        body["limits"] = limits
    return body


def _limits(args: argparse.Namespace) -> dict[str, int]:
    pairs = (("requests_per_minute", args.rpm), ("tokens_per_minute", args.tpm))
    return {name: value for name, value in pairs if value is not None}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InferfluxError(f"cannot read a JSON policy from {path}: {exc}") from None


def print_error(program: str, exc: InferfluxError) -> int:
    """Report an error the way both commands do; exit status 1."""
    print(f"{program}: error: {exc.message}", file=sys.stderr)
    return 1
