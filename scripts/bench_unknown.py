"""Callbacks/s of unknown triggers (the catch-all) against delivery reports, through `serve`,
loaded by wrk with pre-signed distinct callbacks (scripts/bench.lua), projections off so only
the writing is measured.

Usage: python -m scripts.bench_unknown [--duration 8] [--connections 64]"""

from __future__ import annotations

import argparse
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from scripts.callback_mix import SECRET, envelope, report, write_signed
from scripts.receiver import Receiver, run_wrk
from tests.postgres_server import create_database, drop_database, find_or_start

N = 60_000


def unknown(i: int, when: datetime) -> dict[str, object]:
    return envelope(
        "01HBENCHPROJECT",
        when,
        event={"contact_event": {"composing_event": {}}, "n": i},
        message_metadata=f"bench-{i:08d}",
        correlation_id=f"01HCORR{i:020d}",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args(argv)
    when = datetime(2024, 6, 16, tzinfo=UTC)
    admin, _ = find_or_start()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        corpora = {
            "unknown trigger": [unknown(i, when + timedelta(seconds=i)) for i in range(N)],
            "delivery report": [
                report("01HBENCHPROJECT", f"01HMSG{i:020d}", "DELIVERED", "SMS", "4670", "C1", when)
                for i in range(N)
            ],
        }
        for backend in ("sqlite", "postgres"):
            for kind, bodies in corpora.items():
                corpus = work / f"{kind.replace(' ', '_')}.tsv"
                write_signed(corpus, bodies)
                pg = create_database(admin, "ledger_bench_u") if backend == "postgres" else None
                url = pg or f"sqlite:///{work}/{backend}-{kind.replace(' ', '_')}.db"
                receiver = Receiver(
                    f"{backend} {kind}",
                    ["callback_ledger.cli", "serve"],
                    {
                        "LEDGER_DATABASE_URL": url,
                        "SINCH_WEBHOOK_SECRET": SECRET,
                        "LEDGER_PROJECTIONS": "off",
                    },
                    work,
                )
                try:
                    result = run_wrk(receiver.url, corpus, args.duration, args.connections)
                finally:
                    receiver.stop()
                    if pg:
                        drop_database(admin, pg)
                print(
                    f"{backend:8} {kind:16} {result['rate']:7.0f}/s  "
                    f"p50 {result.get('p50_us', 0) / 1000:.1f} ms  "
                    f"p99 {result.get('p99_us', 0) / 1000:.1f} ms  "
                    f"non-2xx {result['non2xx']}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
