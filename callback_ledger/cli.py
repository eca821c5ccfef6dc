"""The `callback-ledger` command."""

from __future__ import annotations

import argparse
import base64
import logging
import os
import signal
import sys
from collections.abc import Iterator, Sequence

import orjson

from callback_ledger.audit_cli import add_commands as add_audit_commands
from callback_ledger.callbacks_cli import add_commands as add_callbacks_commands
from callback_ledger.erase_cli import add_commands as add_erase_commands
from callback_ledger.evidence_cli import add_commands as add_evidence_commands
from callback_ledger.export_cli import add_command as add_export_command
from callback_ledger.followup_cli import add_commands as add_followup_commands
from callback_ledger.keys_cli import add_commands as add_key_commands
from callback_ledger.secrets_cli import add_commands as add_secrets_commands
from callback_ledger.serve_cli import add_command as add_serve_command
from callback_ledger.verify_cli import add_commands as add_verify_commands
from domain.callbacks import Receipt, loads_body
from service.logs import setup as setup_logs
from service.settings import ConfigError, Settings, collect_less_often
from store.format_version import FormatError
from store.vault import SecretsError


def quarantine(settings: Settings, args: argparse.Namespace) -> int:
    from access.api_keys import KeyStore, cli_user
    from projections.read_model.quarantine import quarantined
    from service.runtime import Runtime

    runtime = Runtime(settings)
    count = 0
    try:
        for item in quarantined(runtime.ledger(), args.after, args.limit):
            sys.stdout.write(orjson.dumps(item).decode() + "\n")
            count += 1
        # Refused bodies are audit data (GET /quarantine needs the audit scope): logged as read.
        KeyStore(runtime.store_database()).record_access(cli_user(), "quarantine", {}, count)
    finally:
        runtime.close()
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
    from callback_ledger.export_cli import carried

    with open(path, "rb") as file:
        for number, line in enumerate(file, 1):
            if line.strip():
                yield f"{path}:{number}", *carried(orjson.loads(line))


def reinterpret(settings: Settings, args: argparse.Namespace) -> int:
    """Records what an earlier version kept in the catch-all and this one interprets."""
    from service.runtime import Runtime

    runtime = Runtime(settings)
    try:
        counts = runtime.ledger().reinterpret_kept()
    finally:
        runtime.close()
    print(
        f"recorded {counts['accepted']}, already recorded {counts['duplicate']}, "
        f"left in the catch-all {counts['not_interpretable']} (they do not fit the contract)"
    )
    return 0


def ingest(settings: Settings, args: argparse.Namespace) -> int:
    """Records callback bodies from files (a JSON document, or one JSON object per line): a
    quarantined body once an operator has fixed it, or a backfill. Kept like any callback,
    marked as not signed and as coming from this command. Exit status 1 if any body was
    refused or any file could not be read."""
    import asyncio
    from datetime import UTC, datetime

    from callback_ledger.export_cli import SOURCE_HEADER
    from service.recorder import Recorder, alone
    from service.runtime import Runtime

    unreadable = [path for path in args.files if not os.path.isfile(path)]
    for path in unreadable:
        sys.stderr.write(f"{path}: no such file\n")
    runtime = Runtime(settings)
    # Refusals are reported, not quarantined: the operator reads them and fixes the file. An
    # export's refused callbacks were quarantined where they came from: they are so again.
    recorder = Recorder(alone(runtime.ledger()), keep_refused=args.keep_arrival)
    refused = 0
    try:
        with asyncio.Runner() as runner:
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
                        {SOURCE_HEADER: "callback-ledger ingest"},
                    )
                    try:
                        outcome = runner.run(recorder.record(raw, receipt))
                    except ValueError as exc:  # a body no rule foresaw: said, and the rest go on
                        refused += 1
                        sys.stderr.write(f"{where}: refused: {exc}\n")
                        continue
                    if outcome.refusal is not None:
                        refused += 1
                        sys.stderr.write(f"{where}: refused: {outcome.refusal.reason}\n")
                        continue
                    sys.stdout.write(
                        f"{where}: {outcome.status} {outcome.trigger} ({outcome.events} events)\n"
                    )
    finally:
        runtime.close()
    return 1 if refused or unreadable else 0


def project(settings: Settings, args: argparse.Namespace) -> int:
    """The projection worker, for deployments that run `serve` with LEDGER_PROJECTIONS=off."""

    from projections.follower import Follower
    from service.runtime import Runtime

    runtime = Runtime(settings)
    runtime.projector().page_size = args.page_size
    # Nothing wakes the worker: it polls every `interval` (backing off on errors).
    follower = Follower(runtime.projector, idle_s=args.interval, min_interval_s=0)
    signal.signal(signal.SIGTERM, lambda *_: follower.halt())
    signal.signal(signal.SIGINT, lambda *_: follower.halt())
    logging.getLogger("callback_ledger").info("projection worker following the log")
    try:
        follower.run(once=args.once)
    finally:
        runtime.close()
    return 0


def replay(settings: Settings, args: argparse.Namespace) -> int:

    from service.replay import replay as run_replay

    # Stopped by SIGTERM as by Ctrl-C: its part processes are stopped too, and a rerun resumes.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    run_replay(
        settings,
        args.projection or None,
        fresh=args.fresh,
        page_size=args.page_size,
        jobs=args.jobs,
    )
    return 0


def check_format(settings: Settings) -> None:
    """Raises FormatError when the store is not of this version's format (after the upgrades
    it needs): every command stops before it starts. A store that cannot be reached is the
    command's to report."""
    from store.backend import Database
    from store.format_version import check

    backend = settings.store_backend()
    try:
        db = Database(backend)
    except Exception:  # unreachable now: the command says so in its own words
        return
    try:
        check(db, backend.store_file() or f"the {settings.backend} store")
    except FormatError:
        raise
    except Exception:
        return
    finally:
        db.close()


def check_keys(settings: Settings) -> None:
    """Raises SecretsError when the store holds encrypted personal data and the keys given are
    missing or not its own: every command stops before it starts, with that said (not at its
    first read, nor as a failing /healthz). A store that cannot be reached is the command's to
    report, as before."""
    from store.backend import Database
    from store.data_keys import META
    from store.vault import Vault

    try:
        db = Database(settings.store_backend())
        try:
            with db.read() as cur:
                if not cur.backend.tables_present(cur, [META]):
                    return
                row = cur.execute(f"SELECT index_check, master_check FROM {META}").fetchone()
        finally:
            db.close()
    except Exception:  # unreachable now: the command says so in its own words
        return
    if row is None:
        return
    secrets = settings.secrets()
    where = settings.store_backend().store_file() or f"the {settings.backend} store"
    if secrets is None:
        raise SecretsError(
            f"{where} holds encrypted personal data: set LEDGER_MASTER_KEY and "
            "LEDGER_INDEX_KEY (or LEDGER_KEY_FILE) to the keys it was created with"
        )
    wrong = Vault(secrets, None).matches(row["index_check"], base64.b64decode(row["master_check"]))
    if wrong is not None:
        raise SecretsError(f"{wrong} ({where})")


# Commands that never open the store.
NO_STORE = {("secrets", "generate")}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="callback-ledger",
        description="Event-sourced store for Sinch Conversation API callbacks. "
        "Configured by LEDGER_DATABASE_URL and SINCH_WEBHOOK_SECRET.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    add_serve_command(commands)

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

    add_audit_commands(commands)
    add_followup_commands(commands)
    add_key_commands(commands)
    add_verify_commands(commands)
    add_evidence_commands(commands)
    add_export_command(commands)
    add_erase_commands(commands)
    add_callbacks_commands(commands)
    add_secrets_commands(commands)

    args = parser.parse_args(argv)
    collect_less_often()
    try:
        setup_logs(getattr(args, "log_level", "info"))
        settings = Settings.from_env()
        if (args.command, getattr(args, "secrets_command", None)) not in NO_STORE:
            if args.command != "export":  # it reads a development build's store too
                check_format(settings)
            check_keys(settings)
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
