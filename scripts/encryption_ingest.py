"""What encrypting personal data costs `serve` on PostgreSQL with the same code: a plaintext
store against an encrypted one, alternating, each under the bench's signed load (wrk on
loopback), with the CPU per callback of the server and of PostgreSQL:

    .venv/bin/python -m scripts.encryption_ingest [--rounds 2] [--duration 10]
        [--stable-numbers] [--warmup S]

(`scripts/bench` compares versions; this compares the two modes of one version.) The keys are
drawn here (`callback-ledger secrets generate`); a store without them is a plaintext one.
The bench's mix sends each message to a new number, so nearly every message needs a data key
of its own (the worst case); `--stable-numbers` sends each to its contact's own number, and
`--warmup S` first sends S seconds of other messages to the same contacts (not measured), so
the measured load finds their keys made, as a store that has run for a while would."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from scripts.callback_mix import SECRET, callback_mix, write_signed
from scripts.proc_stats import cpu_seconds, cpu_split
from scripts.receiver import Receiver, postgres_databases, run_wrk
from store.vault import INDEX, MASTER, generate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=int, default=10, help="seconds of load per run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--callbacks", type=int, default=150_000, help="size of the corpus")
    parser.add_argument(
        "--stable-numbers",
        action="store_true",
        help="each message to its contact's own number (20,000 contacts), not a new one",
    )
    parser.add_argument(
        "--warmup", type=int, default=0, help="seconds of other messages first, not measured"
    )
    args = parser.parse_args(argv)
    if not shutil.which("wrk"):
        parser.exit(2, "wrk is needed (scripts/bench installs it)\n")
    keys = dict(line.split("=", 1) for line in generate().splitlines() if "=" in line)
    for name in (MASTER, INDEX, "LEDGER_KEY_FILE"):
        os.environ.pop(name, None)
    work = Path(tempfile.mkdtemp(prefix="ledger-encryption-"))
    corpus, warmup = work / "corpus.tsv", work / "warmup.tsv"
    bodies = callback_mix(args.callbacks, stable_numbers=args.stable_numbers)
    # Other messages (another seed) to the same contacts; at most what the warm-up can send.
    warm_bodies = callback_mix(
        min(args.callbacks, 5_000 * args.warmup), seed=2, stable_numbers=args.stable_numbers
    )
    modes = ["plaintext", "encrypted"] * args.rounds
    results: dict[str, list[tuple[float, float, float]]] = {m: [] for m in modes}
    with postgres_databases(len(modes)) as databases:
        for i, (mode, database_url) in enumerate(zip(modes, databases, strict=True)):
            env = {"LEDGER_DATABASE_URL": database_url, "SINCH_WEBHOOK_SECRET": SECRET}
            if mode == "encrypted":
                env.update(keys)
            receiver = Receiver(f"{mode}-{i}", ["callback_ledger.cli", "serve"], env, work)
            try:
                # Signed afresh for each run: their timestamps must stay within the window,
                # and the two corpora's nonces (their line numbers) in different seconds.
                if args.warmup:
                    write_signed(warmup, warm_bodies)
                    run_wrk(receiver.url, warmup, args.warmup, args.connections)
                    time.sleep(1.1)
                write_signed(corpus, bodies)
                before = cpu_seconds()
                result = run_wrk(receiver.url, corpus, args.duration, args.connections)
                cpu = cpu_split(before, cpu_seconds(), [receiver.process.pid])
            finally:
                receiver.stop()
            per = 1e6 / max(result["requests"], 1)
            run = (result["rate"], cpu["server"] * per, cpu["postgres"] * per)
            results[mode].append(run)
            print(
                f"{mode:<10} {run[0]:8,.0f}/s  server {run[1]:4.0f} µs/callback  "
                f"postgres {run[2]:4.0f} µs/callback",
                flush=True,
            )
    print()
    for r, (plain, sealed) in enumerate(
        zip(results["plaintext"], results["encrypted"], strict=True), start=1
    ):
        print(
            f"round {r}: encrypted / plaintext: rate {sealed[0] / plain[0]:.2f}, server CPU "
            f"{sealed[1] / plain[1]:.2f}, postgres CPU {sealed[2] / plain[2]:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
