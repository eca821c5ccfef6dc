"""Reading one callback by its reference on a long stream: one contact receives N inbound
messages, then `GET /callbacks/{reference}`'s lookup (callbacks.callback) is timed for references
near the start, middle and end of the stream.

Usage: python -m scripts.lookup_bench [--events 10000] [--backend sqlite|postgres]
(postgres: a database of its own on 127.0.0.1:5432 or LEDGER_TEST_POSTGRES_URL, dropped after)."""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import orjson

from domain.callbacks import Receipt
from domain.contact import Contact, contact_key
from projections.read_model import callbacks
from service.settings import Settings, open_ledger
from store.group_commit import LRU, GroupCommit, run


def inbound(i: int) -> dict[str, object]:
    return {
        "app_id": "APP1",
        "project_id": "P",
        "event_time": "2024-06-15T15:10:00Z",
        "message": {
            "id": f"IN{i}",
            "direction": "TO_APP",
            "contact_message": {"text_message": {"text": f"hello number {i}"}},
            "channel_identity": {"channel": "SMS", "identity": "+46700000001", "app_id": "APP1"},
            "contact_id": "CHATTY",
            "conversation_id": "CONV1",
            "processing_mode": "CONVERSATION",
        },
    }


@contextmanager
def database(backend: str) -> Iterator[str]:
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{tmp}/ledger.sqlite3"
        return
    from tests.postgres_server import create_database, drop_database, find_or_start

    admin, _ = find_or_start()
    url = create_database(admin, "ledger_lookup")
    try:
        yield url
    finally:
        drop_database(admin, url)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--reads", type=int, default=20)
    args = parser.parse_args(argv)
    with database(args.backend) as url:
        ledger = open_ledger(Settings.from_env({**os.environ, "LEDGER_DATABASE_URL": url}))
        cache = LRU(10)
        for start in range(0, args.events, 500):
            commands = []
            for i in range(start, min(start + 500, args.events)):
                body = inbound(i)
                receipt = Receipt(orjson.dumps(body).decode(), datetime.now(UTC), True)
                command = ledger.command_for(body, receipt)
                assert command is not None
                commands.append(command)
            run(GroupCommit(ledger, cache=cache), commands)
        stream = Contact.create_id("P", contact_key("CHATTY", "SMS", "+46700000001"))
        for i in (0, args.events // 2, args.events - 1):
            reference = f"{stream}/INBOUND|IN{i}"
            times = []
            for _ in range(args.reads):
                began = time.perf_counter()
                found = callbacks.callback(ledger, reference)
                times.append(time.perf_counter() - began)
                assert found is not None and f'"IN{i}"' in found["raw"]
            print(
                f"{args.backend} {args.events} events, reference #{i}: "
                f"median {statistics.median(times) * 1000:.2f} ms, max {max(times) * 1000:.2f} ms"
            )
        ledger.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
