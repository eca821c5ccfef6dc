"""`callback-ledger secrets generate` and `callback-ledger migrate --to URL`: the keys of
personal data, and an unencrypted store copied into an encrypted one (service.migrate)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from service.migrate import MigrationRefused, migrate
from service.settings import Settings
from store.vault import generate


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
    sys.stdout.write(
        "migrate: done: "
        + ", ".join(f"{name.replace('_', ' ')} {count}" for name, count in counts.items())
        + "\n"
    )
    return 0


def add_commands(commands: Any) -> None:
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
