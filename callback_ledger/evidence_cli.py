"""`callback-ledger evidence --channel C --identity N [--since] [--until] --out FILE` writes an
evidence bundle (README, "Evidence"); `callback-ledger evidence verify FILE` checks one without
the database (its bytes, seals and chain, and every fact, time, number and text it shows,
derived again from its events): exit 0 with the head and counts, exit 1 naming the first
mismatch."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

from access.api_keys import KeyStore, cli_user
from callback_ledger.audit_cli import time_arg
from evidence import chain
from evidence import claims as bundles
from service.runtime import Runtime
from service.settings import Settings


def run_export(settings: Settings, args: argparse.Namespace) -> int:
    if not (args.channel and args.identity and args.out):
        raise SystemExit(
            "evidence: give --channel, --identity and --out (or: evidence verify FILE)"
        )
    runtime = Runtime(settings)
    try:
        found = bundles.bundle(
            runtime.ledger(), runtime.store_database(), runtime.database(),
            args.channel, args.identity, args.since, args.until, keywords(settings),
        )  # fmt: skip
        subject = {k: v for k, v in found["subject"].items() if v is not None}
        KeyStore(runtime.store_database()).record_access(
            cli_user(), "evidence", {**subject, "out": str(args.out)}, len(found["events"])
        )
    finally:
        runtime.close()
    Path(args.out).write_bytes(orjson.dumps(found, option=orjson.OPT_INDENT_2) + b"\n")
    head = found["head"]
    print(
        f"evidence: {len(found['consent_facts'])} consent facts, {len(found['messages'])} "
        f"messages, {len(found['events'])} events, {len(found['seals'])} seals; head "
        + (f"position {head['position']} hash {head['hash']}" if head else "none (no seal yet)")
        + f" -> {args.out}"
    )
    return 0


def keywords(settings: Settings) -> dict[str, Any]:
    """The keyword configuration inbound texts are read with (a bundle states it)."""
    return {
        "languages": list(settings.keyword_languages),
        "opt_out": list(settings.opt_out_keywords),
        "opt_in": None if settings.opt_in_keywords is None else list(settings.opt_in_keywords),
        "help": list(settings.help_keywords),
    }


def run_check(settings: Settings, args: argparse.Namespace) -> int:
    try:
        checked = bundles.verify(orjson.loads(Path(args.file).read_bytes()))
    except chain.Mismatch as exc:
        sys.stderr.write(f"evidence verify: FAILED: {exc}\n")
        return 1
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        sys.stderr.write(f"evidence verify: FAILED: unreadable bundle: {exc!r}\n")
        return 1
    head = checked.head
    where = f"head position {head['position']} hash {head['hash']}" if head else "no head"
    print(f"evidence verify: ok: {where} ({checked.events} events, {checked.seals} seals)")
    return 0


def add_commands(commands: Any) -> None:
    p = commands.add_parser(
        "evidence",
        help="write a self-contained evidence bundle for a number (or: evidence verify FILE)",
    )
    p.add_argument("--channel")
    p.add_argument("--identity")
    p.add_argument("--since", type=time_arg)
    p.add_argument("--until", type=time_arg)
    p.add_argument("--out", metavar="FILE")
    p.set_defaults(run=run_export)
    sub = p.add_subparsers(dest="evidence_command")
    v = sub.add_parser("verify", help="check a bundle without the database (exit 1: mismatch)")
    v.add_argument("file", metavar="FILE")
    v.set_defaults(run=run_check)
