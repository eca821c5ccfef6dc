"""`callback-ledger keys create|list|revoke`: API keys for every route but the webhook."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from access.api_keys import SCOPES, KeyProblem, KeyStore, parse_scopes
from callback_ledger.audit_cli import TABLE, emit
from service.runtime import Runtime
from service.settings import Settings


def run_create(settings: Settings, args: argparse.Namespace) -> int:
    try:
        with Runtime(settings) as runtime:
            scopes = parse_scopes(args.scope)
            key = KeyStore(runtime.store_database()).create(args.name, scopes, args.expires_in)
    except KeyProblem as exc:
        sys.stderr.write(f"keys create: {exc}\n")
        return 1
    expiry = f", expires in {args.expires_in:g} days" if args.expires_in else ""
    sys.stdout.write(
        f"created key {args.name!r} (scopes: {', '.join(scopes)}{expiry}). It is shown only "
        "now; send it as 'Authorization: Bearer <key>':\n"
    )
    sys.stdout.write(key + "\n")  # alone on the last line: scripts read it
    return 0


def run_list(settings: Settings, args: argparse.Namespace) -> int:
    with Runtime(settings) as runtime:
        rows = KeyStore(runtime.store_database()).listed()
    columns = ["name", "scopes", "state", "created_at", "expires_at", "last_used_at", "revoked_at"]
    return emit(rows, args.format, "API keys", columns)


def run_revoke(settings: Settings, args: argparse.Namespace) -> int:
    with Runtime(settings) as runtime:
        revoked = KeyStore(runtime.store_database()).revoke(args.name)
    if not revoked:
        sys.stderr.write(f"keys revoke: no active key is named {args.name!r}\n")
        return 1
    sys.stdout.write(
        f"revoked key {args.name!r}; running servers refuse it within 5 seconds (their key cache)\n"
    )
    return 0


def add_commands(commands: Any) -> None:
    keys = commands.add_parser("keys", help="API keys for the read and audit routes")
    sub = keys.add_subparsers(dest="keys_command", required=True)

    p = sub.add_parser("create", help="create a key; prints it once, alone on the last line")
    p.add_argument("--name", required=True)
    p.add_argument(
        "--scope",
        action="append",
        required=True,
        help=f"{', '.join(SCOPES)} or all; comma-separated or repeated",
    )
    p.add_argument("--expires-in", type=float, metavar="DAYS", help="default: never")
    p.set_defaults(run=run_create)

    p = sub.add_parser(
        "list", help="keys: name, scopes, created, expires, last used (never the key)"
    )
    p.add_argument("--format", choices=TABLE, default="table")
    p.set_defaults(run=run_list)

    p = sub.add_parser("revoke", help="revoke a key by name")
    p.add_argument("name")
    p.set_defaults(run=run_revoke)
