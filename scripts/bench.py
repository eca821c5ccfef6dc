"""The side-by-side benchmark (`scripts/bench`): ingest throughput and latency of callback-ledger
against two baselines measured in the same run, a durability check for each receiver, replay
speed and memory, and the live projection lag. Loopback only; every run bounded in time.

    scripts/bench [--duration 10] [--connections 64] [--replay-events 1000000]

Ratios, not absolute numbers, are what compare across machines and commits: the last line is a
one-line summary of them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from scripts.callback_mix import SECRET, callback_mix, write_signed
from scripts.db_stats import event_count
from scripts.durability import check_durability
from scripts.health_probe import LagProbe, key_headers
from scripts.proc_stats import cpu_seconds, cpu_split
from scripts.receiver import Receiver, postgres_databases, run_wrk
from scripts.replay_bench import generate_log, measure_replay

LAG_MEASURED = ("callback-ledger pg", "callback-ledger pg+worker")


def cpu_per(row: dict[str, Any]) -> float:
    """Microseconds of CPU per callback, the receiver's processes and PostgreSQL together."""
    return float(1e6 * (row["cpu"]["server"] + row["cpu"]["postgres"]) / max(row["requests"], 1))


def print_cpu(rows: list[dict[str, Any]], base: float) -> None:
    """Where each receiver's CPU went, per callback, against the most 2x the plain insert's
    rate could allow: every core of the machine divided by that rate, as if wrk took none."""
    cores = os.cpu_count() or 1
    print("\nCPU per callback, in microseconds")
    print(f"{'receiver':<26}{'receiver':>10}{'postgres':>10}{'both':>8}")
    for r in rows:
        per = 1e6 / max(r["requests"], 1)
        print(
            f"{r['name']:<26}{r['cpu']['server'] * per:>10.0f}{r['cpu']['postgres'] * per:>10.0f}"
            f"{cpu_per(r):>8.0f}"
        )
    print(
        f"(receiver: its processes, with the projection worker where there is one.) 2x the "
        f"plain insert ({2 * base:,.0f}/s) would leave at most {1e6 * cores / (2 * base):.0f} us "
        f"per callback for both on {cores} cores, if wrk took no CPU at all"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds of load per receiver")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--callbacks", type=int, default=150_000, help="size of the load corpus")
    parser.add_argument(
        "--replay-events",
        type=int,
        default=200_000,
        help="log size for the replay figure (the goal is stated for 1,000,000)",
    )
    args = parser.parse_args(argv)
    if not shutil.which("wrk"):
        parser.exit(2, "wrk is needed (Debian: apt-get install wrk); scripts/bench installs it\n")

    work = Path(tempfile.mkdtemp(prefix="ledger-bench-"))
    corpus = work / "corpus.tsv"
    write_signed(corpus, callback_mix(args.callbacks))
    rows: list[dict[str, Any]] = []
    print(
        f"load: {args.callbacks} signed callbacks (~{corpus.stat().st_size // args.callbacks} "
        f"bytes), {args.connections} connections, {args.duration}s each, wrk on loopback",
        flush=True,
    )

    with postgres_databases(6) as (
        insert_db,
        insert_x2_db,
        ledger_db,
        worker_db,
        pg_x2_db,
        replay_db,
    ):
        sqlite_url = f"sqlite:///{work}/bench.sqlite3"
        receivers = [
            (
                "null",
                "null",
                ["uvicorn", "--factory", "scripts.baselines:null_app"],
                {},
                None,
            ),
            (
                "plain insert",
                "insert",
                ["uvicorn", "--factory", "scripts.baselines:insert_app"],
                {"BASELINE_DATABASE_URL": insert_db},
                insert_db,
            ),
            (
                "plain insert x2",
                "insert",
                [
                    "uvicorn",
                    "--factory",
                    "scripts.baselines:insert_app",
                    "--workers",
                    "2",
                ],
                {"BASELINE_DATABASE_URL": insert_x2_db},
                insert_x2_db,
            ),
            (
                "callback-ledger pg",
                "ledger",
                ["callback_ledger.cli", "serve"],
                {"LEDGER_DATABASE_URL": ledger_db, "SINCH_WEBHOOK_SECRET": SECRET},
                ledger_db,
            ),
            (
                "callback-ledger pg+worker",
                "ledger",
                ["callback_ledger.cli", "serve"],
                {
                    "LEDGER_DATABASE_URL": worker_db,
                    "SINCH_WEBHOOK_SECRET": SECRET,
                    "LEDGER_PROJECTIONS": "off",
                },
                worker_db,
            ),
            (
                "callback-ledger pg x2",
                "ledger",
                ["callback_ledger.cli", "serve", "--workers", "2"],
                {"LEDGER_DATABASE_URL": pg_x2_db, "SINCH_WEBHOOK_SECRET": SECRET},
                pg_x2_db,
            ),
            (
                "callback-ledger sqlite",
                "ledger",
                ["callback_ledger.cli", "serve"],
                {"LEDGER_DATABASE_URL": sqlite_url, "SINCH_WEBHOOK_SECRET": SECRET},
                sqlite_url,
            ),
        ]
        # The live lag, with projections in the server and in a worker of their own.
        lags: dict[str, dict[str, Any]] = {}
        for name, kind, command, env, database_url in receivers:
            receiver = Receiver(name, command, env, work)
            worker = None
            if env.get("LEDGER_PROJECTIONS") == "off":
                # The deployment compose.yaml describes: projections in a process of their own.
                worker = subprocess.Popen(
                    [sys.executable, "-m", "callback_ledger.cli", "project"],
                    env={**os.environ, **env},
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            try:
                probe = (
                    LagProbe(receiver.url, key_headers(database_url))
                    if name in LAG_MEASURED and database_url
                    else None
                )
                before = event_count(database_url) if kind == "ledger" and database_url else 0
                pids = [receiver.process.pid] + ([worker.pid] if worker is not None else [])
                cpu_before = cpu_seconds()
                result = run_wrk(receiver.url, corpus, args.duration, args.connections)
                result["cpu"] = cpu_split(cpu_before, cpu_seconds(), pids)
                if probe is not None and database_url:
                    events = event_count(database_url) - before
                    event_rate = events / (result["duration_us"] / 1e6)
                    worst = probe.stop()
                    lags[name] = {
                        "max_events": worst,
                        "max_seconds": worst / max(event_rate, 1),
                        "catch_up_s": probe.seconds_to_catch_up(),
                    }
                result["durability"] = check_durability(receiver, kind, database_url)
                rows.append({"name": name, **result})
            finally:
                receiver.stop()
                if worker is not None:
                    worker.terminate()
                    worker.wait(timeout=20)
            print(f"  {name}: {result['rate']:,.0f}/s done", flush=True)

        base = next(r["rate"] for r in rows if r["name"] == "plain insert")
        print()
        print(
            f"{'receiver':<24}{'callbacks/s':>12}{'p50 ms':>9}{'p99 ms':>9}{'vs insert':>11}"
            f"{'errors':>8}  durability (acknowledged = stored)"
        )
        for r in rows:
            errors = r["non2xx"] + r["connect"] + r["read"] + r["write"] + r["timeout"]
            print(
                f"{r['name']:<24}{r['rate']:>12,.0f}{r['p50_us'] / 1000:>9.1f}"
                f"{r['p99_us'] / 1000:>9.1f}{r['rate'] / base:>10.2f}x{errors:>8}  "
                f"{r['durability']}"
            )
        print_cpu(rows, base)
        print()
        for name, lag in lags.items():
            print(
                f"live projection lag under that load ({name}): worst {lag['max_events']} events "
                f"= {lag['max_seconds']:.2f} s of ingest; caught up {lag['catch_up_s']:.2f} s "
                "after the load stopped"
            )

        print(f"\nreplay: generating a log of {args.replay_events:,} events ...", flush=True)
        generated = generate_log(replay_db, args.replay_events)
        replays = {}
        for jobs in (1, 2):
            replays[jobs] = measure_replay(replay_db, jobs)
            rate, seconds, rss = replays[jobs]
            how = "one process" if jobs == 1 else f"--jobs {jobs}"
            print(
                f"replay ({how}): {generated:,} events through both projections in "
                f"{seconds:.1f} s = {rate:,.0f} events/s; peak RSS {rss:.0f} MB (all its processes)"
            )

    pg = next(r for r in rows if r["name"] == "callback-ledger pg")
    lite = next(r for r in rows if r["name"] == "callback-ledger sqlite")
    split = next(r for r in rows if r["name"] == "callback-ledger pg+worker")
    two = next(r for r in rows if r["name"] == "callback-ledger pg x2")
    insert_two = next(r for r in rows if r["name"] == "plain insert x2")
    shutil.rmtree(work, ignore_errors=True)
    print(
        f"SUMMARY ledger_pg={pg['rate']:.0f}/s ({pg['rate'] / base:.2f}x insert) "
        f"p99={pg['p99_us'] / 1000:.1f}ms pg+worker={split['rate']:.0f}/s "
        f"({split['rate'] / base:.2f}x) x2={two['rate']:.0f}/s ({two['rate'] / base:.2f}x; "
        f"{two['rate'] / insert_two['rate']:.2f}x insert x2) sqlite={lite['rate']:.0f}/s "
        f"insert={base:.0f}/s null={rows[0]['rate']:.0f}/s replay={replays[1][0]:.0f}ev/s "
        f"rss={replays[1][2]:.0f}MB replay_jobs2={replays[2][0]:.0f}ev/s rss={replays[2][2]:.0f}MB "
        f"lag={lags[pg['name']]['max_seconds']:.2f}s "
        f"worker_lag={lags[split['name']]['max_seconds']:.2f}s "
        f"cpu_us/callback: insert={cpu_per(rows[1]):.0f} "
        f"ledger_pg={cpu_per(pg):.0f} pg+worker={cpu_per(split):.0f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
