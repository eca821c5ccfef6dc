"""`callback-ledger callbacks list`: the stored callbacks (interpreted, or kept in the
catch-all) by trigger and arrival, as GET /callbacks lists them: references and times, no
bodies. The same cursor pages both."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from api.query_routes import decode_cursor, encode_cursor
from callback_ledger.audit_cli import TABLE, accessed, emit, time_arg
from projections.read_model import callbacks
from service.runtime import Runtime
from service.settings import Settings

COLUMNS = [
    "received_at",
    "trigger",
    "interpreted",
    "event_time",
    "project_id",
    "app_id",
    "reference",
]


def add_commands(commands: Any) -> None:
    parser = commands.add_parser(
        "callbacks", help="stored callbacks, uninterpreted ones too (CONTACT_MERGE, ...)"
    )
    sub = parser.add_subparsers(dest="callbacks_command", required=True)
    p = sub.add_parser("list", help="stored callbacks by trigger and arrival time, oldest first")
    p.add_argument("--trigger", type=str.upper, help="e.g. CONTACT_MERGE; default: every trigger")
    p.add_argument("--since", type=time_arg, help="arrived at or after this time")
    p.add_argument("--until", type=time_arg, help="arrived before this time")
    p.add_argument("--limit", type=positive, default=100, help="at most this many (default 100)")
    p.add_argument("--cursor", type=cursor_arg, help="go on after a listing that said more follow")
    p.add_argument("--format", choices=TABLE, default="table")
    p.set_defaults(run=run_list)


def positive(value: str) -> int:
    if not (value.isascii() and value.isdigit() and int(value) >= 1):
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of 1 or more")
    return int(value)


def cursor_arg(value: str) -> list[str]:
    decoded = decode_cursor(value, 2)
    if decoded is None:
        raise argparse.ArgumentTypeError("not a cursor a listing gave out")
    return decoded


def run_list(settings: Settings, args: argparse.Namespace) -> int:
    with Runtime(settings) as runtime:
        with runtime.database().read() as cur:
            page = callbacks.listed(
                cur, args.trigger, args.since, args.until, args.cursor, args.limit
            )
        subject = {k: v for k, v in vars(args).items() if k in ("trigger", "since", "until") and v}
        accessed(runtime, "callbacks list", subject, len(page.items))
    rows = [{column: item[column] for column in COLUMNS} for item in page.items]
    cursor = encode_cursor(page.next_key) if page.next_key is not None else None
    if args.format == "json":
        listing = {"items": rows, "next_cursor": cursor}
        sys.stdout.write(orjson.dumps(listing, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    emit(rows, args.format, "stored callbacks", COLUMNS)
    if cursor is not None:
        sys.stderr.write(f"more follow: --cursor {cursor}\n")
    return 0
