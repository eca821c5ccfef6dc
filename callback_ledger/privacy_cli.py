"""The commands of personal data: `erase` and `retention apply` make it unreadable by destroying
its keys (privacy.erasure, privacy.retention); `secrets generate` prints fresh keys; `migrate
--to URL` copies an unencrypted store into an encrypted one (service.migrate)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from access.api_keys import cli_user
from privacy.erasure import ErasureRefused, erase
from privacy.retention import apply
from service.migrate import MigrationRefused, migrate
from service.runtime import Runtime
from service.settings import Settings
from store.vault import generate


def run_erase(settings: Settings, args: argparse.Namespace) -> int:
    if args.contact is not None and args.project is None:
        sys.stderr.write("erase: --contact needs --project (contact ids are per project)\n")
        return 2
    if args.contact is None and (args.channel is None or args.identity is None):
        sys.stderr.write("erase: give --channel and --identity, or --contact and --project\n")
        return 2
    try:
        with Runtime(settings) as runtime:
            report = erase(
                runtime.ledger(),
                channel=args.channel,
                identity=args.identity,
                project_id=args.project,
                contact_id=args.contact,
                by=args.by or cli_user(),
                reason=args.reason,
                forget_consent=args.forget_consent,
                db=runtime.database() if args.contact is not None else None,
            )
    except ErasureRefused as exc:
        sys.stderr.write(f"erase: refused: {exc}\n")
        return 1
    if args.format == "json":
        sys.stdout.write(orjson.dumps(report.as_dict()).decode() + "\n")
    else:
        sys.stdout.write(
            f"erased ({report.scope}): {report.keys_destroyed} data key(s) of "
            f"{len(report.subjects)} subject(s) destroyed; recorded as erasure "
            f"{report.erasure_id} at {report.erased_at}; opt-out suppression "
            f"{report.consent_suppression}\n"
        )
    if report.purge_pending:
        sys.stderr.write(f"erase: warning: {report.purge_pending}\n")
        return 3
    return 0


def run_retention(settings: Settings, args: argparse.Namespace) -> int:
    with Runtime(settings) as runtime:
        report = apply(runtime.ledger(), settings, dry_run=args.dry_run)
    if args.format == "json":
        sys.stdout.write(orjson.dumps(report.as_dict()).decode() + "\n")
        return 0
    if not report.encrypted:
        sys.stdout.write(
            "retention: this store is not encrypted: nothing can be shredded "
            "(`callback-ledger migrate` copies it into an encrypted store)\n"
        )
        return 0
    verb = "would make unreadable" if args.dry_run else "made unreadable"
    for name, found in report.classes.items():
        months = ", ".join(f"{p} ({n} keys)" for p, n in found.periods.items()) or "nothing"
        sys.stdout.write(
            f"retention {name} ({found.days} days, keeping {found.keep_from} on): {verb} {months}\n"
        )
    return 0


def run_generate(settings: Settings, args: argparse.Namespace) -> int:
    # Printed, never logged: the operator puts them in the environment or LEDGER_KEY_FILE.
    sys.stdout.write(generate())
    return 0


def run_migrate(settings: Settings, args: argparse.Namespace) -> int:
    try:
        counts = migrate(settings, args.to)
    except MigrationRefused as exc:
        sys.stderr.write(f"migrate: refused: {exc}\n")
        return 1
    done = ", ".join(f"{name.replace('_', ' ')} {count}" for name, count in counts.items())
    sys.stdout.write(f"migrate: done: {done}\n")
    return 0


def add_erase_commands(commands: Any) -> None:
    p = commands.add_parser(
        "erase",
        help="erase a channel identity's or a contact's personal data (destroys its keys; "
        "records who, when and why)",
    )
    p.add_argument("--channel", help="with --identity: e.g. SMS, WHATSAPP")
    p.add_argument("--identity", help="the channel identity (a phone number, a PSID...)")
    p.add_argument("--contact", metavar="ID", help="a contact id: it and every identity seen on it")
    p.add_argument("--project", metavar="P", help="the contact's project id (with --contact)")
    p.add_argument(
        "--reason",
        required=True,
        help="why (kept in the log in the clear: a ticket number, not personal data)",
    )
    p.add_argument("--by", help="who asks (default: cli:<user>)")
    p.add_argument(
        "--forget-consent",
        action="store_true",
        help="also drop the opt-out suppression of these identities (default: kept, so they "
        "are not messaged again; README: Personal data)",
    )
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(run=run_erase)

    retention = commands.add_parser(
        "retention", help="retention of personal data (LEDGER_RETENTION_*_DAYS)"
    )
    sub = retention.add_subparsers(dest="retention_command", required=True)
    p = sub.add_parser(
        "apply",
        help="destroy the data keys of months past their class's retention; says what it "
        "made unreadable",
    )
    p.add_argument("--dry-run", action="store_true", help="only say what it would destroy")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(run=run_retention)


def add_secrets_commands(commands: Any) -> None:
    secrets = commands.add_parser("secrets", help="the keys of personal data")
    sub = secrets.add_subparsers(dest="secrets_command", required=True)
    p = sub.add_parser(
        "generate",
        help="print a fresh LEDGER_MASTER_KEY and LEDGER_INDEX_KEY (NAME=value lines, for the "
        "environment or LEDGER_KEY_FILE)",
    )
    p.set_defaults(run=run_generate)

    p = commands.add_parser(
        "migrate",
        help="copy this store (LEDGER_DATABASE_URL, written without encryption) into a new, "
        "empty, encrypted store by recording every callback again",
    )
    p.add_argument("--to", required=True, metavar="URL", help="the new store's database URL")
    p.set_defaults(run=run_migrate)
