"""`callback-ledger export --out FILE`: every stored callback as received, one JSON object a
line, with its receipt, for `ingest --keep-arrival` to record into a new store. Reads a store
of this version or a development build's (store.development_stores). A callback whose key was
destroyed has no body left: it is counted, not exported."""

from __future__ import annotations

import argparse
import base64
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import orjson

from domain.callbacks import Receipt
from service.settings import Settings
from store import development_stores, format_version
from store.backend import Database

PAGE = 500
# The header `ingest` marks its callbacks with; a callback without it came to the webhook.
SOURCE_HEADER = "x-ledger-source"


def add_command(commands: Any) -> None:
    p = commands.add_parser(
        "export",
        help="write every stored callback with its receipt as JSON Lines (carried over into "
        "a new store by `ingest --keep-arrival`)",
    )
    p.add_argument("--out", required=True, metavar="FILE", help="the file to write (made anew)")
    p.set_defaults(run=run_export)


def run_export(settings: Settings, args: argparse.Namespace) -> int:
    from projections.log_reader import decode_state
    from service.runtime import Runtime

    db = Database(settings.store_backend())
    try:
        if format_version.version(db) is None:
            decode = development_stores.decoder(db, settings.secrets())
            exported, erased = write(db, decode, args.out)
        else:
            with Runtime(settings) as runtime:
                vault = runtime.ledger().vault
                exported, erased = write(db, lambda state: decode_state(state, vault), args.out)
    finally:
        db.close()
    print(f"exported {exported} callbacks to {args.out}")
    if erased:
        sys.stderr.write(f"{erased} callbacks were erased (their keys destroyed): not exported\n")
    return 0


def write(db: Database, decode: Callable[[bytes], dict[str, Any]], out: str) -> tuple[int, int]:
    """Writes the callbacks of the log's events to `out`: (how many, how many erased)."""
    seen: set[tuple[str, str]] = set()
    exported = erased = 0
    with open(out, "xb") as file:
        for state in _states(db, decode):
            record = record_of(state)
            if record is None:
                erased += state.get("erased") is True and "callback" in state
                continue
            key = (record.get("raw") or record["raw_base64"], record["received_at"])
            if key in seen:  # one callback written as events on two streams
                continue
            seen.add(key)
            file.write(orjson.dumps(record) + b"\n")
            exported += 1
    return exported, erased


def _states(db: Database, decode: Callable[[bytes], dict[str, Any]]) -> Iterator[dict[str, Any]]:
    events, column = db.backend.events_table, db.backend.log_id_column
    after = 0
    while True:
        with db.read() as cur:
            rows = cur.tuples(
                f"SELECT {column}, state FROM {events} WHERE {column} > ? "
                f"ORDER BY {column} LIMIT ?",
                [after, PAGE],
            )
        for _, state in rows:
            yield decode(bytes(state))
        if len(rows) < PAGE:
            return
        after = int(rows[-1][0])


def record_of(state: dict[str, Any]) -> dict[str, Any] | None:
    """An event's callback as exported, or None: no callback, or one erased."""
    receipt = state.get("callback")
    if not isinstance(receipt, dict):
        return None
    raw, raw_base64 = receipt.get("raw"), state.get("raw_base64")
    if raw is None and raw_base64 is None:
        return None
    headers = receipt.get("headers") or {}
    return {
        **({"raw": raw} if raw is not None else {"raw_base64": raw_base64}),
        "received_at": receipt["received_at"],
        "signature_verified": receipt["signature_verified"],
        "headers": headers,
        "source": headers.get(SOURCE_HEADER, "webhook"),
    }


def carried(record: dict[str, Any]) -> tuple[bytes, Receipt]:
    """An exported callback's body, and the receipt it is recorded with again."""
    raw = record["raw"].encode() if "raw" in record else base64.b64decode(record["raw_base64"])
    return raw, Receipt(
        raw.decode("utf-8", errors="replace"),
        datetime.fromisoformat(record["received_at"]),
        bool(record["signature_verified"]),
        {str(k): str(v) for k, v in record["headers"].items()},
    )
