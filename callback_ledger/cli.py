"""The `callback-ledger` command, and its commands on the callbacks themselves: `quarantine`,
`callbacks list` (as GET /callbacks: references and times, no bodies), `ingest`,
`reinterpret`, and the projections' `project` and `replay`."""

from __future__ import annotations

import argparse
import base64
import logging
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import orjson

from api.query_routes import decode_cursor, encode_cursor
from callback_ledger import (
    audit_cli,
    evidence_cli,
    export_cli,
    followup_cli,
    keys_cli,
    privacy_cli,
    serve_cli,
)
from domain.callbacks import Receipt, loads_body
from projections.read_model import callbacks
from service.logs import setup as setup_logs
from service.runtime import Runtime
from service.settings import ConfigError, Settings, collect_less_often
from store.format_version import FormatError
from store.vault import SecretsError


def quarantine(settings: Settings, args: argparse.Namespace) -> int:
    from projections.read_model.quarantine import quarantined

    count = 0
    with Runtime(settings) as runtime:
        for item in quarantined(runtime.ledger(), args.after, args.limit):
            sys.stdout.write(orjson.dumps(item).decode() + "\n")
            count += 1
        # Refused bodies are audit data (GET /quarantine needs the audit scope).
        audit_cli.accessed(runtime, "quarantine", {}, count)
    return 0


CALLBACK_COLUMNS = [
    "received_at",
    "trigger",
    "interpreted",
    "event_time",
    "project_id",
    "app_id",
    "reference",
]


def add_callbacks_commands(commands: Any) -> None:
    parser = commands.add_parser(
        "callbacks", help="stored callbacks, uninterpreted ones too (CONTACT_MERGE, ...)"
    )
    sub = parser.add_subparsers(dest="callbacks_command", required=True)
    p = sub.add_parser("list", help="stored callbacks by trigger and arrival time, oldest first")
    p.add_argument("--trigger", type=str.upper, help="e.g. CONTACT_MERGE; default: every trigger")
    p.add_argument("--since", type=audit_cli.time_arg, help="arrived at or after this time")
    p.add_argument("--until", type=audit_cli.time_arg, help="arrived before this time")
    p.add_argument("--limit", type=positive, default=100, help="at most this many (default 100)")
    p.add_argument("--cursor", type=cursor_arg, help="go on after a listing that said more follow")
    p.add_argument("--format", choices=audit_cli.TABLE, default="table")
    p.set_defaults(run=list_callbacks)


def positive(value: str) -> int:
    if not (value.isascii() and value.isdigit() and int(value) >= 1):
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of 1 or more")
    return int(value)


def cursor_arg(value: str) -> list[str]:
    decoded = decode_cursor(value, 2)
    if decoded is None:
        raise argparse.ArgumentTypeError("not a cursor a listing gave out")
    return decoded


def list_callbacks(settings: Settings, args: argparse.Namespace) -> int:
    with Runtime(settings) as runtime:
        with runtime.database().read() as cur:
            page = callbacks.listed(
                cur, args.trigger, args.since, args.until, args.cursor, args.limit
            )
        subject = {k: v for k, v in vars(args).items() if k in ("trigger", "since", "until") and v}
        audit_cli.accessed(runtime, "callbacks list", subject, len(page.items))
    rows = [{column: item[column] for column in CALLBACK_COLUMNS} for item in page.items]
    cursor = encode_cursor(page.next_key) if page.next_key is not None else None
    if args.format == "json":
        listing = {"items": rows, "next_cursor": cursor}
        sys.stdout.write(orjson.dumps(listing, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    audit_cli.emit(rows, args.format, "stored callbacks", CALLBACK_COLUMNS)
    if cursor is not None:
        sys.stderr.write(f"more follow: --cursor {cursor}\n")
    return 0


def read_bodies(path: str) -> Iterator[tuple[str, bytes, Receipt | None]]:
    """(where, raw body) for each body in a file: one JSON document (an object, or an array of
    them: a pretty-printed export), or JSON Lines. Raises OSError when it cannot be read."""
    with open(path, "rb") as file:
        data = file.read()
    try:
        document = loads_body(data)
    except ValueError:
        document = None
    if isinstance(document, dict):
        yield path, data.strip(), None
        return
    if isinstance(document, list):
        for number, body in enumerate(document, 1):
            yield f"{path}[{number}]", orjson.dumps(body), None
        return
    for number, line in enumerate(data.splitlines(), 1):
        if line.strip():
            yield f"{path}:{number}", line.strip(), None


def exported(path: str) -> Iterator[tuple[str, bytes, Receipt | None]]:
    """(where, raw body, its receipt) for each callback `export` wrote to a file."""
    with open(path, "rb") as file:
        for number, line in enumerate(file, 1):
            if line.strip():
                yield f"{path}:{number}", *export_cli.carried(orjson.loads(line))


def reinterpret(settings: Settings, args: argparse.Namespace) -> int:
    """Records what an earlier version kept in the catch-all and this one interprets."""
    with Runtime(settings) as runtime:
        counts = runtime.ledger().reinterpret_kept()
    print(
        f"recorded {counts['accepted']}, already recorded {counts['duplicate']}, "
        f"left in the catch-all {counts['not_interpretable']} (they do not fit the contract)"
    )
    return 0


def ingest(settings: Settings, args: argparse.Namespace) -> int:
    """Records callback bodies from files (a fixed quarantined body, or a backfill), marked as
    not signed and as coming from this command. Exit status 1 if any body was refused or any
    file could not be read."""
    import asyncio
    from datetime import UTC, datetime

    from service.recorder import Recorder, alone

    unreadable = [path for path in args.files if not os.path.isfile(path)]
    for path in unreadable:
        sys.stderr.write(f"{path}: no such file\n")
    refused = 0
    with Runtime(settings) as runtime, asyncio.Runner() as runner:
        # Refusals are reported, not quarantined: the operator reads them and fixes the file.
        # An export's refused callbacks were quarantined where they came from: so again.
        recorder = Recorder(alone(runtime.ledger()), keep_refused=args.keep_arrival)
        for path in args.files:
            if path in unreadable:
                continue
            try:
                bodies = list(exported(path) if args.keep_arrival else read_bodies(path))
            except OSError as exc:
                refused += 1
                sys.stderr.write(f"{path}: cannot read it: {exc.strerror or exc}\n")
                continue
            for where, raw, kept in bodies:
                receipt = kept or Receipt(
                    # Not UTF-8 is refused as not JSON before the receipt is read.
                    raw.decode("utf-8", errors="replace"),
                    datetime.now(UTC),
                    False,
                    {export_cli.SOURCE_HEADER: "callback-ledger ingest"},
                )
                try:
                    outcome = runner.run(recorder.record(raw, receipt))
                    refusal = outcome.refusal and outcome.refusal.reason
                except ValueError as exc:  # a body no rule foresaw: said, and the rest go on
                    refusal = str(exc)
                if refusal:
                    refused += 1
                    sys.stderr.write(f"{where}: refused: {refusal}\n")
                else:
                    sys.stdout.write(
                        f"{where}: {outcome.status} {outcome.trigger} ({outcome.events} events)\n"
                    )
    return 1 if refused or unreadable else 0


def project(settings: Settings, args: argparse.Namespace) -> int:
    """The projection worker, for deployments that run `serve` with LEDGER_PROJECTIONS=off."""
    from projections.follower import Follower

    with Runtime(settings) as runtime:
        runtime.projector().page_size = args.page_size
        # Nothing wakes the worker: it polls every `interval` (backing off on errors).
        follower = Follower(runtime.projector, idle_s=args.interval, min_interval_s=0)
        signal.signal(signal.SIGTERM, lambda *_: follower.halt())
        signal.signal(signal.SIGINT, lambda *_: follower.halt())
        logging.getLogger("callback_ledger").info("projection worker following the log")
        follower.run(once=args.once)
    return 0


def replay(settings: Settings, args: argparse.Namespace) -> int:
    from service.replay import replay as run_replay

    # Stopped by SIGTERM as by Ctrl-C: its part processes are stopped too, and a rerun resumes.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    names = args.projection or None
    run_replay(settings, names, fresh=args.fresh, page_size=args.page_size, jobs=args.jobs)
    return 0


def check_store(settings: Settings, format: bool) -> None:
    """Every command stops before it starts, saying why, when the store is not of this
    version's `format` (after the upgrades it needs: FormatError), or holds encrypted personal
    data and the keys given are missing or not its own (SecretsError). A store that cannot be
    reached is the command's to report, in its own words."""
    from store.backend import Database
    from store.data_keys import META
    from store.format_version import check
    from store.vault import Vault

    backend = settings.store_backend()
    where = backend.store_file() or f"the {backend.name} store"
    try:
        db = Database(backend)
    except Exception:
        return
    try:
        if format:
            check(db, where)
        with db.read() as cur:
            if not cur.backend.tables_present(cur, [META]):
                return
            row = cur.execute(f"SELECT index_check, master_check FROM {META}").fetchone()
    except FormatError:
        raise
    except Exception:
        return
    finally:
        db.close()
    if row is None:
        return
    secrets = settings.secrets()
    if secrets is None:
        raise SecretsError(
            f"{where} holds encrypted personal data: set LEDGER_MASTER_KEY and "
            "LEDGER_INDEX_KEY (or LEDGER_KEY_FILE) to the keys it was created with"
        )
    wrong = Vault(secrets, None).matches(row["index_check"], base64.b64decode(row["master_check"]))
    if wrong is not None:
        raise SecretsError(f"{wrong} ({where})")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="callback-ledger",
        description="Event-sourced store for Sinch Conversation API callbacks. "
        "Configured by LEDGER_DATABASE_URL and SINCH_WEBHOOK_SECRET.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve_cli.add_command(commands)

    p = commands.add_parser(
        "quarantine", help="list refused callbacks kept for an operator (JSONL)"
    )
    p.add_argument("--after", type=int, default=0, help="cursor: list entries after this id")
    p.add_argument("--limit", type=int, default=100)
    p.set_defaults(run=quarantine)

    p = commands.add_parser(
        "ingest",
        help="record callback bodies from files (a JSON object or array, or JSON Lines)",
    )
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument(
        "--keep-arrival",
        action="store_true",
        help="the files are `export`'s: record each callback with its receipt as exported "
        "(arrival time, headers, signature verified)",
    )
    p.set_defaults(run=ingest)

    p = commands.add_parser(
        "reinterpret",
        help="record the catch-all's callbacks of triggers this version interprets "
        "(MESSAGE_SUBMIT kept by earlier versions) on their messages; run once after upgrading",
    )
    p.set_defaults(run=reinterpret)

    p = commands.add_parser("project", help="follow the log into the read tables (worker)")
    p.add_argument("--interval", type=float, default=0.5, help="seconds between polls")
    p.add_argument("--once", action="store_true", help="catch up once and exit")
    p.add_argument("--page-size", type=int, default=1000, help="events per transaction")
    p.set_defaults(run=project)

    p = commands.add_parser("replay", help="rebuild projections from the first event")
    p.add_argument(
        "--projection",
        action="append",
        choices=["messages", "consent", "callbacks"],
        help="one projection (repeatable); default: all",
    )
    p.add_argument("--fresh", action="store_true", help="discard an interrupted rebuild")
    p.add_argument(
        "--page-size",
        type=int,
        default=5000,
        help="events per transaction (see the README's replay figures for time and memory)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="processes building the messages projection, each its share of the messages "
        "(PostgreSQL; default 1; 2 on 2 cores: about 1.5x the events/s)",
    )
    p.set_defaults(run=replay)

    audit_cli.add_commands(commands)
    followup_cli.add_commands(commands)
    keys_cli.add_commands(commands)
    evidence_cli.add_commands(commands)
    export_cli.add_command(commands)
    privacy_cli.add_erase_commands(commands)
    add_callbacks_commands(commands)
    privacy_cli.add_secrets_commands(commands)

    args = parser.parse_args(argv)
    collect_less_often()
    try:
        setup_logs(getattr(args, "log_level", "info"))
        settings = Settings.from_env()
        if getattr(args, "secrets_command", None) != "generate":  # the one that opens no store
            # `export` reads a development build's store too.
            check_store(settings, format=args.command != "export")
        return int(args.run(settings, args))
    except ConfigError as exc:
        parser.exit(2, f"callback-ledger: configuration error: {exc}\n")
    except SecretsError as exc:
        # The store's keys are missing or wrong: said plainly, before anything runs on it.
        parser.exit(2, f"callback-ledger: keys of personal data: {exc}\n")
    except FormatError as exc:
        parser.exit(2, f"callback-ledger: {exc}\n")


if __name__ == "__main__":
    sys.exit(main())
