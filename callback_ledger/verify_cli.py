"""`callback-ledger verify [--since N]`: recomputes the seal chain (store.seal) and names the
first event or seal that does not match, an event no seal covers, or one whose stored columns
cannot be read (exit 1), or prints the head it verified (exit 0)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

import orjson

from evidence import seal_reads
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
    runtime = Runtime(settings)
    try:
        # Opening the ledger creates the seal table if need be.
        events_table = runtime.ledger().events_table
        found = seal_reads.verify(runtime.store_database(), events_table, args.since, args.expect)
    finally:
        runtime.close()
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
    if args.format == "json":
        out.write(orjson.dumps(report).decode() + "\n")
    else:
        out.write(text)
    return code


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
