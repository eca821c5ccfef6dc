"""Does recording one more inbound message of a chatty contact cost more as its stream grows?

One contact receives N inbound messages. The messages around the 100th and around the Nth are
recorded one at a time and timed, on both write paths:
- `group`: the group commit with a warm aggregate cache, one command per batch (what `serve`'s
  group commit does for a lone request);
- `alone`: the Recorder committing alone, which loads the stream from the store each time (what
  `ingest` and the retry of a failed batch do);
- `cold`: the group commit with an empty cache, one command per batch (a batch after a restart,
  after a conflict with another process, or once the contact left the cache).
The rest are recorded in batches of 256 (snapshots are taken as usual). Each figure is the mean
over one snapshot interval of 200 messages (every 10th of them for `cold`), in µs per message;
then the contact's snapshots: how many, their bytes, and the latest one's bytes.

    .venv/bin/python -m scripts.contact_growth [N] [DATABASE_URL]

N defaults to 10,000; the URL to a new SQLite file in a temp dir (a PostgreSQL URL must name an
empty database)."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from typing import Any

import orjson

from domain.callbacks import Receipt
from domain.contact import Contact
from service import recorder as recording
from service.recorder import Recorder
from service.settings import Settings, open_ledger
from store.commands import Command
from store.group_commit import LRU, GroupCommit, run
from store.ledger import Ledger

WINDOW = 200


def body(i: int) -> dict[str, Any]:
    when = "2024-06-15T15:10:00Z"
    return {
        "app_id": "01HAPPAPPAPPAPPAPPAPPAPPAP",
        "project_id": "growth-project",
        "accepted_time": when,
        "event_time": when,
        "message": {
            "id": f"01HZX{i:021d}",
            "direction": "TO_APP",
            "contact_message": {"text_message": {"text": f"hello, this is message {i}"}},
            "channel_identity": {"channel": "SMS", "identity": "46732001122", "app_id": "APP1"},
            "conversation_id": "01HCONVCONVCONVCONVCONVCON",
            "contact_id": "01HCONTACTCONTACTCONTACTCO",
            "accept_time": when,
            "processing_mode": "CONVERSATION",
        },
    }


def receipt(b: dict[str, Any]) -> Receipt:
    return Receipt(orjson.dumps(b).decode(), datetime.now(UTC), True, {})


def command(ledger: Ledger, i: int) -> Command:
    b = body(i)
    found = ledger.command_for(b, receipt(b))
    assert found is not None
    return found


def snapshot_sizes(ledger: Ledger) -> tuple[int, int, int]:
    """(snapshots, bytes of all, bytes of the latest) of the contact's stream."""
    assert ledger.snapshots is not None
    contact = Contact.create_id("growth-project", "01HCONTACTCONTACTCONTACTCO")
    stored = ledger.snapshots.recorder.select_events(contact)
    sizes = [len(s.state) for s in stored]
    return len(sizes), sum(sizes), sizes[-1] if sizes else 0


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    url = sys.argv[2] if len(sys.argv) > 2 else None
    if url is None:
        url = f"sqlite:///{tempfile.mkdtemp()}/growth.sqlite3"
    ledger = open_ledger(Settings.from_env({**os.environ, "LEDGER_DATABASE_URL": url}))
    cache = LRU(1000)
    recorder = Recorder(recording.alone(ledger), keep_refused=False)
    runner = asyncio.Runner()
    recorded = 0

    def fill(upto: int) -> None:
        nonlocal recorded
        while recorded < upto:
            batch = [command(ledger, i) for i in range(recorded, min(upto, recorded + 256))]
            for result in run(GroupCommit(ledger, cache=cache), batch):
                assert not isinstance(result, BaseException), result
            recorded += len(batch)

    def timed(path: str, every: int = 1) -> float:
        """Over the next WINDOW messages (one snapshot interval, so each reload's tail takes
        every length once), timing every `every`th."""
        nonlocal recorded
        total = 0.0
        for _ in range(WINDOW // every):
            fill(recorded + every - 1)
            i = recorded
            if path != "alone":
                c = command(ledger, i)
                core = GroupCommit(ledger, cache=cache if path == "group" else LRU(10))
                started = time.perf_counter()
                [result] = run(core, [c])
                total += time.perf_counter() - started
                assert not isinstance(result, BaseException), result
                status: str = result.status
            else:
                r = receipt(body(i))
                started = time.perf_counter()
                status = runner.run(recorder.record(r.raw.encode(), r)).status
                total += time.perf_counter() - started
            assert status == "accepted", status
            recorded += 1
        return total / (WINDOW // every) * 1e6

    rows = []
    for upto in (0, n - 3 * WINDOW):
        fill(upto)
        # Three windows of one snapshot interval each, at about the same stream length.
        group = timed("group")
        alone = timed("alone")
        cold = timed("cold", 10)
        rows.append((f"{upto + 1:,}-{recorded:,}", group, alone, cold, *snapshot_sizes(ledger)))
    runner.close()
    ledger.close()
    print(f"{url.split(':')[0]}, one contact, {recorded} inbound messages")
    print("messages | group µs | alone µs | cold µs | snapshots | all bytes | latest bytes")
    for at, group, alone, cold, count, total, latest in rows:
        print(
            f"{at} | {group:>8,.0f} | {alone:>8,.0f} | {cold:>7,.0f} | {count:>9} "
            f"| {total:>9,} | {latest:,}"
        )


if __name__ == "__main__":
    main()
