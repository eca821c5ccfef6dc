"""`callback-ledger audit ...`: the consent audit on the command line, and the output and
options every reading command shares: a readable table by default, or `--format json|csv`
(and `jsonl` for export) for machines and archives."""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from access.api_keys import KeyStore, cli_user
from domain.identity import NotANumber, checked
from projections.personal import ERASED_TEXT
from projections.read_model import consent
from projections.rules import iso
from service.csv_cells import cell
from service.runtime import Runtime
from service.settings import Settings
from store.backend import Cursor
from store.vault import Vault

TABLE = ["table", "json", "csv"]


def time_arg(value: str) -> str:
    try:
        return iso(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an ISO 8601 time (e.g. 2024-06-15T15:00:00Z)"
        ) from None


def options(
    p: argparse.ArgumentParser, window: bool = True, formats: list[str] = TABLE, default: str = ""
) -> None:
    """--since and --until (`window`), and --format (`default`: its first choice)."""
    if window:
        p.add_argument("--since", type=time_arg)
        p.add_argument("--until", type=time_arg)
    p.add_argument("--format", choices=formats, default=default or formats[0])


def accessed(runtime: Runtime, route: str, subject: dict[str, Any], results: int) -> None:
    """Audit data read on the command line is logged as read, as over HTTP."""
    KeyStore(runtime.store_database()).record_access(cli_user(), route, subject, results)


def flatten(row: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


# Personal fields a row may show, that read as None once their key was destroyed.
PERSONAL = ("identity", "text")


def marked(row: dict[str, Any]) -> dict[str, Any]:
    """A flat row for a table or CSV: a personal value that was erased as `[erased]` (in JSON
    it is null, with `"erased": true`)."""
    out = dict(row)
    for key, value in row.items():
        prefix, _, field = key.rpartition(".")
        erased = row.get(f"{prefix}.erased" if prefix else "erased")
        if value is None and field in PERSONAL and erased:
            out[key] = ERASED_TEXT
    return out


def emit(rows: Iterable[dict[str, Any]], fmt: str, title: str, columns: list[str]) -> int:
    rows = [flatten(r) for r in rows]
    if fmt not in ("json", "jsonl"):
        rows = [marked(r) for r in rows]
    out = sys.stdout
    if fmt == "json":
        out.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode() + "\n")
    elif fmt == "jsonl":
        for row in rows:
            out.write(orjson.dumps(row).decode() + "\n")
    elif fmt == "csv":
        fields = list(dict.fromkeys(k for row in rows for k in row)) or columns
        by_name = csv.DictWriter(out, fieldnames=fields, extrasaction="ignore")
        by_name.writeheader()
        by_name.writerows({k: cell(v) for k, v in row.items()} for row in rows)
    elif not out.isatty():
        # Piped or redirected: every column whole, as tab-separated values (a drawn table
        # would be cut to 80 columns), which a spreadsheet opens as it opens CSV.
        writer = csv.writer(out, dialect="excel-tab")
        writer.writerow(columns)
        writer.writerows([cell(row.get(c)) for c in columns] for row in rows)
    else:
        table = Table(title=f"{title} ({len(rows)})")
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
        Console(file=out).print(table)
    return 0


def add_commands(commands: Any) -> None:
    audit_parser = commands.add_parser(
        "audit", help="consent audit: history, at, violations, review, export, access"
    )
    sub = audit_parser.add_subparsers(dest="audit_command", required=True)

    p = sub.add_parser("history", help="consent facts of a contact or a number, in time order")
    p.add_argument("--contact")
    p.add_argument("--channel")
    p.add_argument("--identity")
    p.add_argument("--project")
    options(p)
    p.set_defaults(run=run_history)

    p = sub.add_parser("at", help="the consent of a number at an instant, and what decided it")
    p.add_argument("--channel", required=True)
    p.add_argument("--identity", required=True)
    p.add_argument("--at", type=time_arg, help="default: now")
    p.add_argument("--project")
    options(p, window=False)
    p.set_defaults(run=run_at)

    p = sub.add_parser("violations", help="messages sent to numbers that had opted out")
    options(p)
    p.set_defaults(run=run_listing)

    p = sub.add_parser(
        "review", help="inbound free text that reads like a request to stop, for a human"
    )
    options(p)
    p.set_defaults(run=run_listing)

    p = sub.add_parser("export", help="the consent history, for archiving")
    options(p, formats=["csv", "jsonl"], default="jsonl")
    p.set_defaults(run=run_listing)

    p = sub.add_parser(
        "access", help="the access log: who read audit data (HTTP keys and CLI users), when"
    )
    p.add_argument("--since", type=time_arg)
    p.add_argument("--key", help="only this key's name (or cli:USER)")
    options(p, window=False)
    p.set_defaults(run=run_access)


def _audited(
    settings: Settings,
    args: argparse.Namespace,
    read: Callable[[Cursor, Vault], Iterable[dict[str, Any]]],
    title: str,
    columns: list[str],
) -> int:
    """Reads the rows (numbers by name, shown values opened with the store's vault), logs who
    asked for what, then prints them."""
    with Runtime(settings) as runtime:
        vault = runtime.projector().vault
        with runtime.database().read() as cur:
            rows = list(read(cur, vault))
        accessed(runtime, f"audit {args.audit_command}", asked(args), len(rows))
    return emit(rows, args.format, title, columns)


def asked(args: argparse.Namespace) -> dict[str, Any]:
    skip = {"format", "run", "command", "audit_command"}
    return {k: v for k, v in vars(args).items() if k not in skip and v is not None}


# The columns of a table (CSV has every field).
HISTORY = [
    "event_time",
    "fact",
    "effect",
    "channel",
    "identity",
    "contact_id",
    "keyword",
    "request_id",
    "inbound_message_id",
    "source_ref",
]
AT = ["channel", "identity", "at", "state", "since", "decided_by.fact", "decided_by.source_ref"]
VIOLATIONS = [
    "message_id",
    "channel",
    "identity",
    "sent_at",
    "opted_out_since",
    "proof.fact",
    "proof.source_ref",
]
REVIEW = [
    "event_time",
    "channel",
    "identity",
    "contact_id",
    "text",
    "matched",
    "inbound_message_id",
    "source_ref",
]
ACCESS = ["id", "at", "actor", "route", "subject", "results", "status"]


def run_history(settings: Settings, args: argparse.Namespace) -> int:
    if not args.contact and not (args.channel and args.identity):
        raise SystemExit("audit history: give --contact, or --channel and --identity")
    if args.identity and not args.channel:
        # A number is held by its name on a channel (a blind index in an encrypted store).
        raise SystemExit("audit history: --identity needs --channel")
    if args.identity:
        args.identity = checked_identity("audit history", args.channel, args.identity)
    return _audited(
        settings,
        args,
        lambda cur, vault: consent.history(
            cur,
            contact_id=args.contact,
            project_id=args.project,
            channel=args.channel and args.channel.upper(),
            identity=consent.name_of(vault, args.channel, args.identity) if args.identity else None,
            since=args.since,
            until=args.until,
            vault=vault,
        ),
        "consent history",
        HISTORY,
    )


def checked_identity(command: str, channel: str, identity: str) -> str:
    """The identity as compared (domain.identity), or an exit naming --identity when a number
    channel's identity is not a number: a consent answer must not depend on its spelling."""
    try:
        return checked(channel, identity)
    except NotANumber as exc:
        raise SystemExit(f"{command}: --identity is {exc} on {channel.upper()}") from None


def run_at(settings: Settings, args: argparse.Namespace) -> int:
    at = args.at or iso(datetime.now(UTC).isoformat())
    identity = checked_identity("audit at", args.channel, args.identity)
    channel = args.channel.upper()
    return _audited(
        settings,
        args,
        lambda cur, vault: [
            {
                "identity": identity,
                **consent.state_at(
                    cur, channel, consent.name_of(vault, channel, identity), at, args.project, vault
                ),
            }
        ],
        "consent at " + at,
        AT,
    )


# The listings over a time window: (title, columns, read).
LISTINGS: dict[str, tuple[str, list[str], Callable[..., Iterable[dict[str, Any]]]]] = {
    "violations": ("consent violations", VIOLATIONS, consent.violations),
    "review": ("consent review", REVIEW, consent.review),
    "export": ("consent history", HISTORY, consent.history),
}


def run_listing(settings: Settings, args: argparse.Namespace) -> int:
    title, columns, read = LISTINGS[args.audit_command]
    return _audited(
        settings,
        args,
        lambda cur, vault: read(cur, since=args.since, until=args.until, vault=vault),
        title,
        columns,
    )


def run_access(settings: Settings, args: argparse.Namespace) -> int:
    with Runtime(settings) as runtime:
        rows = KeyStore(runtime.store_database()).accesses(args.since, args.key)
        accessed(runtime, "audit access", asked(args), len(rows))
    for row in rows:
        if args.format != "json":  # one column in a table or CSV
            row["subject"] = orjson.dumps(row["subject"], option=orjson.OPT_SORT_KEYS).decode()
    return emit(rows, args.format, "access log", ACCESS)
