"""The soak (`scripts/soak`): a long run of distinct signed callbacks of the bench's realistic mix
at `callback-ledger serve`, on PostgreSQL and on SQLite, with one contact that keeps writing.

    scripts/soak [--callbacks 1000000] [--chatty 50000] [--slices 10] [--backend both]

For each tenth (slice) of the run it prints callbacks/s, p99, the server's RSS, the database's
size, and how long one more inbound message of the chatty contact takes to record (sequential,
median of a few); at the end, whether every distinct fact acknowledged is stored, the bytes on
disk per callback and their ratio to the raw bodies, and those bytes table by table and index by
index. Loopback only, bounded: each slice is a fixed set of callbacks sent once.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

from scripts.callback_mix import SECRET, callback_mix
from scripts.db_stats import backend_pids, blocks_read, database_bytes, storage_breakdown
from scripts.durability import stored_reports
from scripts.health_probe import key_headers, projection_lag, wait_caught_up
from scripts.proc_stats import CpuMeter, machine_busy_s, tree_pids, tree_rss_mb, written_bytes
from scripts.receiver import Receiver, postgres_databases
from scripts.soak_client import chatty_inbound, send_once, time_chatty
from scripts.speed_probe import SpeedProbe


def soak(name: str, url: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    env = {"LEDGER_DATABASE_URL": url, "SINCH_WEBHOOK_SECRET": SECRET}
    server = Receiver(f"soak {name}", ["callback_ledger.cli", "serve"], env, work)
    key = key_headers(url)  # /healthz's detail (the projections' lag) needs a key
    expected: set[tuple[str, str]] = set()
    rows: list[dict[str, Any]] = []
    sent = non2xx = body_bytes = 0
    per_slice = args.callbacks // args.slices
    chatty_per_slice = args.chatty // args.slices
    chatty_sent = 0
    server_cpu, db_cpu, client_cpu = CpuMeter(), CpuMeter(), CpuMeter()
    client_cpu.used([os.getpid()])
    server_cpu.used(tree_pids(server.process.pid))
    db_cpu.used(backend_pids(url))
    busy, blocks = machine_busy_s(), blocks_read(url)
    written = written_bytes(tree_pids(server.process.pid) + backend_pids(url))
    probe = SpeedProbe()
    try:
        print(
            f"\n{name}: {args.slices} slices of {per_slice:,} callbacks "
            f"(+{chatty_per_slice:,} from one contact)",
            flush=True,
        )
        print(
            f"{'slice':>5} {'callbacks/s':>12} {'p99 ms':>8} {'RSS MB':>8} {'DB MB':>8} "
            f"{'chatty ms':>10} {'srv CPU ms/cb':>14} {'db CPU ms/cb':>13} {'lag':>7} "
            f"{'catch-up s':>10} {'chatty idle ms':>15} {'fresh ms':>9} {'client':>7} "
            f"{'others':>7} {'written B/cb':>12} {'blk reads/cb':>12} {'probe ms':>9}",
            flush=True,
        )
        for index in range(args.slices):
            bodies = callback_mix(
                per_slice - chatty_per_slice, seed=index + 1, stable_numbers=args.stable_numbers
            )
            bodies += [chatty_inbound(chatty_sent + k, "B") for k in range(chatty_per_slice)]
            chatty_sent += chatty_per_slice
            for body in bodies:
                report = body.get("message_delivery_report")
                if report:
                    expected.add((report["message_id"], report["status"]))
            probe.take()  # drops the samples taken between slices
            result = send_once(server.port, bodies, f"{name[:2]}{index:03d}", args.connections)
            probe_ms = probe.take()
            sent += len(bodies)
            body_bytes += result["body_bytes"]
            non2xx += result["non2xx"]
            # Read before anything else runs: the CPU the slice's callbacks cost.
            srv_s = server_cpu.used(tree_pids(server.process.pid))
            db_s = db_cpu.used(backend_pids(url))
            srv_ms, db_ms = srv_s * 1000 / len(bodies), db_s * 1000 / len(bodies)
            client_s = client_cpu.used([os.getpid()])
            # Cores the load client, and anything else on the machine, kept busy meanwhile.
            client = client_s / result["elapsed_s"]
            others = (machine_busy_s() - busy - srv_s - db_s - client_s) / result["elapsed_s"]
            reads_per_cb = (blocks_read(url) - blocks) / len(bodies)
            written_per_cb = (
                written_bytes(tree_pids(server.process.pid) + backend_pids(url)) - written
            ) / len(bodies)
            lag = projection_lag(server.url, key)
            chatty_ms = time_chatty(server.url, 10_000_000 + index * 100)
            # Again once the projections have caught up: the recording alone, without the
            # follower applying the slice's backlog beside it.
            catch_up_s = wait_caught_up(server.url, key)
            chatty_idle_ms = time_chatty(server.url, 10_000_000 + index * 100 + 50)
            fresh_ms = time_chatty(server.url, 20_000_000 + index * 100, fresh=True)
            server_cpu.used(tree_pids(server.process.pid))
            db_cpu.used(backend_pids(url))
            client_cpu.used([os.getpid()])
            busy, blocks = machine_busy_s(), blocks_read(url)
            written = written_bytes(tree_pids(server.process.pid) + backend_pids(url))
            row = {
                "slice": index + 1,
                "rate": result["rate"],
                "p99_ms": result["p99_ms"],
                "rss_mb": tree_rss_mb(server.process.pid),
                "db_mb": database_bytes(url) / 2**20,
                "chatty_ms": chatty_ms,
                "server_cpu_ms": srv_ms,
                "db_cpu_ms": db_ms,
                "lag": lag,
                "catch_up_s": catch_up_s,
                "chatty_idle_ms": chatty_idle_ms,
                "fresh_contact_ms": fresh_ms,
                "client_cores": client,
                "other_cores": others,
                "server_written_per_cb": written_per_cb,
                "db_blocks_read_per_cb": reads_per_cb,
                "probe_ms": probe_ms,
            }
            rows.append(row)
            print(
                f"{row['slice']:>5} {row['rate']:>12,.0f} {row['p99_ms']:>8.1f} "
                f"{row['rss_mb']:>8.0f} {row['db_mb']:>8.0f} {chatty_ms:>10.1f} "
                f"{srv_ms:>14.2f} {db_ms:>13.2f} {lag:>7} {catch_up_s:>10.1f} "
                f"{chatty_idle_ms:>15.1f} {fresh_ms:>9.1f} {client:>7.2f} {others:>7.2f} "
                f"{written_per_cb:>12,.0f} {reads_per_cb:>12.2f} {probe_ms:>9.1f}",
                flush=True,
            )
    finally:
        probe.stop()
        server.stop()
    stored = stored_reports(url)
    lost = len(expected - stored)
    size = database_bytes(url)
    breakdown = storage_breakdown(url)
    half = rows[len(rows) // 2 :]
    summary = {
        "backend": name,
        "callbacks": sent,
        "non2xx": non2xx,
        "lost": lost,
        "distinct_reports": len(expected),
        "last_vs_first_rate": rows[-1]["rate"] / rows[0]["rate"],
        # The machine's speed moves on a shared machine: the same ratio at the first slice's
        # speed (each rate scaled by its slice's probe; a slower probe is a larger time).
        "probe_last_vs_first": rows[-1]["probe_ms"] / rows[0]["probe_ms"],
        "last_vs_first_rate_same_speed": (rows[-1]["rate"] * rows[-1]["probe_ms"])
        / (rows[0]["rate"] * rows[0]["probe_ms"]),
        "rss_growth_second_half": half[-1]["rss_mb"] / half[0]["rss_mb"] - 1,
        "chatty_last_vs_first": rows[-1]["chatty_ms"] / rows[0]["chatty_ms"],
        "chatty_idle_last_vs_first": rows[-1]["chatty_idle_ms"] / rows[0]["chatty_idle_ms"],
        "server_cpu_last_vs_first": rows[-1]["server_cpu_ms"] / max(rows[0]["server_cpu_ms"], 1e-9),
        "rows": rows,
        "bytes_per_callback": size / max(sent, 1),
        "disk_vs_body": size / max(body_bytes, 1),
        "body_bytes_per_callback": body_bytes / max(sent, 1),
        "breakdown": {name: nbytes for _, name, nbytes in breakdown},
    }
    print(
        f"{name}: {sent:,} callbacks, non-2xx {non2xx}, delivery facts acknowledged = stored: "
        f"{len(expected) - lost:,}/{len(expected):,} (lost {lost}); last slice "
        f"{summary['last_vs_first_rate']:.2f}x the first ("
        f"{summary['last_vs_first_rate_same_speed']:.2f}x at the first's machine speed: the "
        f"probe took {summary['probe_last_vs_first']:.2f}x as long); RSS over the second half "
        f"{summary['rss_growth_second_half']:+.1%}; chatty contact's last message "
        f"{summary['chatty_last_vs_first']:.2f}x the first; {summary['bytes_per_callback']:,.0f} "
        f"bytes on disk per callback ({summary['disk_vs_body']:.1f}x the raw bodies)",
        flush=True,
    )
    print(
        f"{name}: bytes per callback by table and index (raw body: "
        f"{summary['body_bytes_per_callback']:,.0f})",
        flush=True,
    )
    for kind, table, nbytes in breakdown:
        if nbytes >= size / 1000:
            print(f"  {kind:<5} {table:<48} {nbytes / max(sent, 1):>8,.1f}", flush=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--callbacks", type=int, default=1_000_000)
    parser.add_argument("--chatty", type=int, default=50_000, help="inbound from one contact")
    parser.add_argument("--slices", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--backend", choices=["both", "postgres", "sqlite"], default="both")
    parser.add_argument(
        "--stable-numbers",
        action="store_true",
        help="each contact at its own number (default: each message at a new random number)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the SQLite store (its path is printed)"
    )
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="ledger-soak-"))
    summaries = []
    try:
        if args.backend in ("both", "postgres"):
            with postgres_databases(1) as (url,):
                summaries.append(soak("postgres", url, work, args))
        if args.backend in ("both", "sqlite"):
            summaries.append(soak("sqlite", f"sqlite:///{work}/soak.sqlite3", work, args))
    finally:
        if args.keep:
            print(f"kept: {work}", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print("SOAK " + orjson.dumps(summaries).decode(), flush=True)
    return 1 if any(s["lost"] or s["non2xx"] for s in summaries) else 0


if __name__ == "__main__":
    sys.exit(main())
