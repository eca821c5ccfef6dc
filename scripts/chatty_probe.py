"""One contact's next message as its stream grows, against a new contact's first at the same
moments (`python -m scripts.chatty_probe --backend postgres`).

The goal: the 50,000th inbound message of one contact is recorded as fast as the 100th.
In the soak that time moves with everything else the machine does; here the contact grows
alone, at a real `serve`, and at each mark one message of the contact and the first message of
a new contact are sent alternately, one at a time (medians of `--samples` each), so what the
store costs at that moment cancels out of their ratio."""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from scripts.callback_mix import SECRET
from scripts.receiver import Receiver, postgres_databases
from scripts.soak_client import chatty_inbound, send_once, signed_post

MARKS = (100, 1_000, 10_000, 50_000)


def one(client: httpx.Client, url: str, body: dict[str, Any]) -> float:
    elapsed, response = signed_post(client, url, body)
    if response.status_code != 200 or response.json()["status"] != "accepted":
        raise RuntimeError(f"refused: {response.text}")
    return elapsed


def probe(name: str, url: str, work: Path, samples: int) -> list[tuple[int, float, float]]:
    server = Receiver(
        f"probe {name}",
        ["callback_ledger.cli", "serve"],
        {"LEDGER_DATABASE_URL": url, "SINCH_WEBHOOK_SECRET": SECRET},
        work,
    )
    results = []
    sent = 0
    try:
        with httpx.Client(timeout=30) as client:
            for mark in MARKS:
                bodies = [chatty_inbound(n, "B") for n in range(sent, mark - samples)]
                if bodies:
                    send_once(server.port, bodies, f"p{mark}", 32)
                sent = mark - samples
                time.sleep(1.0)  # the projections catch up
                chatty, fresh = [], []
                for k in range(samples):
                    chatty.append(one(client, server.url, chatty_inbound(sent + k, "P")))
                    body = chatty_inbound(k, f"F{mark}")
                    body["message"]["contact_id"] = f"01HNEW{mark:08d}{k:012d}"
                    fresh.append(one(client, server.url, body))
                sent += samples
                results.append((mark, statistics.median(chatty), statistics.median(fresh)))
                print(
                    f"{name}: message {mark:>6,} of one contact {results[-1][1]:6.2f} ms, "
                    f"a new contact's first {results[-1][2]:6.2f} ms, "
                    f"ratio {results[-1][1] / results[-1][2]:.2f}",
                    flush=True,
                )
    finally:
        server.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", choices=["both", "postgres", "sqlite"], default="both")
    parser.add_argument("--samples", type=int, default=41)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="ledger-probe-"))
    try:
        if args.backend in ("both", "postgres"):
            with postgres_databases(1) as (url,):
                probe("postgres", url, work, args.samples)
        if args.backend in ("both", "sqlite"):
            probe("sqlite", f"sqlite:///{work}/probe.sqlite3", work, args.samples)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
