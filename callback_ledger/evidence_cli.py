"""`callback-ledger verify`: recomputes the seal chain (store.seal) and names the first event or
seal that does not match (exit 1), or prints the head it verified (exit 0).

`callback-ledger evidence --channel C --identity N [--since] [--until] --out FILE` writes an
evidence bundle (README, "Evidence"); `evidence verify FILE` checks one without the database,
deriving every fact, time, number and text it shows again from its events: exit 0 with the
head and counts, exit 1 naming the first mismatch."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

import orjson

from callback_ledger.audit_cli import accessed, time_arg
from evidence import chain, seal_reads
from evidence import claims as bundles
from evidence.verify import Problem
from service.runtime import Runtime
from service.settings import Settings
from store import spellings


def recorded_head(text: str) -> tuple[int, bytes]:
    position, _, digest = text.partition(":")
    try:
        return int(position), bytes.fromhex(digest)
    except ValueError:
        raise argparse.ArgumentTypeError(
            "expected POSITION:HASH (hex), as GET /seal gives"
        ) from None


def run_verify(settings: Settings, args: argparse.Namespace) -> int:
    with Runtime(settings) as runtime:
        # Opening the ledger creates the seal table if need be.
        events_table = runtime.ledger().events_table
        found = seal_reads.verify(runtime.store_database(), events_table, args.since, args.expect)
    if isinstance(found, Problem):
        if found.topic is not None:  # named as the code reads it, not by its stored short code
            found = dataclasses.replace(found, topic=spellings.read(found.topic))
        report: dict[str, Any] = {
            "ok": False,
            "problem": found.kind,
            "notification_id": found.notification_id,
            "seal": found.seal_position,
            "stream": found.stream,
            "topic": found.topic,
            "detail": found.detail,
        }
        text = f"verify: FAILED: {found.describe()}\n"
        out, code = sys.stderr, 1
    else:
        head = found.head.head() if found.head is not None else None
        report = {
            "ok": True,
            "head": head,
            "events": found.events,
            "seals": found.seals,
            "from": found.start,
        }
        where = (
            f"head position {head['position']} hash {head['hash']}"
            if head is not None
            else "an empty log (no seal yet)"
        )
        text = (
            f"verify: ok: {where} ({found.events} events in {found.seals} seals checked, "
            f"from notification {found.start})\n"
        )
        out, code = sys.stdout, 0
    out.write(orjson.dumps(report).decode() + "\n" if args.format == "json" else text)
    return code


def run_export(settings: Settings, args: argparse.Namespace) -> int:
    if not (args.channel and args.identity and args.out):
        raise SystemExit(
            "evidence: give --channel, --identity and --out (or: evidence verify FILE)"
        )
    with Runtime(settings) as runtime:
        found = bundles.bundle(
            runtime.ledger(), runtime.store_database(), runtime.database(),
            args.channel, args.identity, args.since, args.until, keywords(settings),
        )  # fmt: skip
        subject = {k: v for k, v in found["subject"].items() if v is not None}
        accessed(runtime, "evidence", {**subject, "out": str(args.out)}, len(found["events"]))
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
        "verify",
        help="recompute the seal chain over the stored events: exit 1 naming the first "
        "altered, missing, reordered, unsealed or unreadable event or bad seal; exit 0 with "
        "the head verified",
    )
    p.add_argument(
        "--since",
        type=int,
        default=0,
        metavar="N",
        help="start at the seal covering notification N, trusting the seal before it "
        "(default: from the first event)",
    )
    p.add_argument(
        "--expect",
        type=recorded_head,
        metavar="POSITION:HASH",
        help="a head recorded elsewhere (GET /seal): the chain verified must hold it",
    )
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(run=run_verify)

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
