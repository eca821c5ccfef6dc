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
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg

from api.signature import sign
from scripts.bench import (
    SECRET,
    Receiver,
    callback_mix,
    key_headers,
    postgres_databases,
    signed_request,
    stored_reports,
)

HERE = Path(__file__).parent
CHATTY = "01HCHATTYCONTACT0000000000"


def chatty_inbound(n: int, key: str) -> dict[str, Any]:
    when = datetime(2024, 7, 1, tzinfo=UTC) + timedelta(seconds=n)
    return {
        "app_id": "01HBENCHAPP0000000000000000",
        "project_id": "PROJECT0",
        "event_time": when.isoformat().replace("+00:00", "Z"),
        "message": {
            "id": f"01HCHAT{key}{n:012d}",
            "direction": "TO_APP",
            "contact_message": {"text_message": {"text": f"message {n}"}},
            "channel_identity": {"channel": "SMS", "identity": "46700000099"},
            "contact_id": CHATTY,
        },
    }


async def _connection(
    host: str, port: int, requests: list[bytes], latencies: list[float], statuses: list[int]
) -> None:
    """One keep-alive connection sending its requests one after another."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for request in requests:
            began = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - began)
            statuses.append(int(head[9:12]))
    finally:
        writer.close()


def request_bytes(port: int, raw: bytes, nonce: str, timestamp: str) -> bytes:
    return (
        f"POST /webhooks/sinch HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Type: application/json\r\n"
        f"x-sinch-webhook-signature: {sign(SECRET, raw, nonce, timestamp)}\r\n"
        f"x-sinch-webhook-signature-nonce: {nonce}\r\n"
        f"x-sinch-webhook-signature-timestamp: {timestamp}\r\n"
        f"Content-Length: {len(raw)}\r\n\r\n"
    ).encode() + raw


def send_once(port: int, bodies: list[dict[str, Any]], prefix: str, connections: int) -> dict:
    """Each body once, signed now with a nonce of its own, over `connections` keep-alive
    connections: a plain asyncio client, lighter than an HTTP library on a 2-core machine."""
    timestamp = str(int(time.time()))
    requests = [
        request_bytes(port, orjson.dumps(body), f"{prefix}{n:020d}", timestamp)
        for n, body in enumerate(bodies)
    ]
    latencies: list[float] = []
    statuses: list[int] = []

    async def run() -> None:
        await asyncio.gather(
            *(
                _connection("127.0.0.1", port, requests[k::connections], latencies, statuses)
                for k in range(connections)
            )
        )

    began = time.perf_counter()
    asyncio.run(run())
    elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "body_bytes": sum(len(orjson.dumps(body)) for body in bodies),
        "rate": len(requests) / elapsed,
        "elapsed_s": elapsed,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000 if latencies else 0.0,
        "non2xx": sum(not 200 <= status < 300 for status in statuses),
    }


def tree_rss_mb(root: int) -> float:
    """RSS of a process and its children (the server's workers), from /proc."""
    total, pids = 0, [root]
    while pids:
        pid = pids.pop()
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                pids += [int(c) for c in f.read().split()]
        except FileNotFoundError:
            continue
    return total / 1024


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) a process has used, from /proc; 0 once gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_pids(root: int) -> list[int]:
    found, pids = [], [root]
    while pids:
        pid = pids.pop()
        found.append(pid)
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                pids += [int(c) for c in f.read().split()]
        except FileNotFoundError:
            continue
    return found


def backend_pids(url: str) -> list[int]:
    """The PostgreSQL server processes serving this database (none for SQLite): their CPU is
    part of each callback's cost. Read from /proc, so only for a server on this machine."""
    if url.startswith("sqlite:"):
        return []
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        ).fetchall()
    return [int(r[0]) for r in rows]


class CpuMeter:
    """CPU seconds used since the last reading, per group of processes (the server's tree, the
    database's backends); a process that started in between counts whole."""

    def __init__(self) -> None:
        self.last: dict[int, float] = {}

    def used(self, pids: list[int]) -> float:
        total = 0.0
        for pid in pids:
            now = cpu_s(pid)
            total += now - self.last.get(pid, 0.0)
            self.last[pid] = now
        return total


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy (all processes, all cores), from /proc/stat:
    with the server's and the database's own, what other work took from the run."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def written_bytes(pids: list[int]) -> int:
    """Bytes these processes caused to be written to storage (/proc/<pid>/io write_bytes)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/io") as f:
                for line in f:
                    if line.startswith("write_bytes:"):
                        total += int(line.split()[1])
        except (FileNotFoundError, PermissionError):
            continue
    return total


def blocks_read(url: str) -> int:
    """Blocks this PostgreSQL database read from outside its shared buffers so far (the OS
    cache or the disk; 0 for SQLite): pages its working set no longer keeps in memory."""
    if url.startswith("sqlite:"):
        return 0
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT blks_read FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    return int(row[0]) if row else 0


def projection_lag(url: str, headers: dict[str, str]) -> int:
    """The largest lag of the projections, in events, from /healthz's detail (a key's; -1 if
    not given)."""
    try:
        health = httpx.get(url + "/healthz", headers=headers, timeout=30).json()
        return max(int(p.get("lag", 0)) for p in health["projections"].values())
    except (httpx.HTTPError, KeyError, ValueError, TypeError):
        return -1


def wait_caught_up(url: str, headers: dict[str, str], limit_s: float = 120) -> float:
    """Seconds until the projections have caught up (lag 0), at most `limit_s`."""
    began = time.monotonic()
    while time.monotonic() - began < limit_s and projection_lag(url, headers) != 0:
        time.sleep(0.05)
    return time.monotonic() - began


def database_bytes(url: str) -> int:
    if url.startswith("sqlite:"):
        path = url.removeprefix("sqlite:///")
        return sum(os.path.getsize(path + s) for s in ("", "-wal") if os.path.exists(path + s))
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    return int(row[0]) if row else 0


def storage_breakdown(url: str) -> list[tuple[str, str, int]]:
    """Bytes on disk per table and per index (kind, name, bytes), largest first: where the bytes
    per callback go. SQLite: its `dbstat` table (pages of each b-tree); PostgreSQL: each table
    with its TOAST and maps, each index on its own."""
    if url.startswith("sqlite:"):
        import sqlite3

        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            rows = conn.execute(
                "SELECT s.type, d.name, SUM(d.pgsize) FROM dbstat AS d "
                "LEFT JOIN sqlite_schema AS s ON s.name = d.name GROUP BY d.name"
            ).fetchall()
        return sorted(((t or "table", n, int(b)) for t, n, b in rows), key=lambda r: -r[2])
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT CASE c.relkind WHEN 'i' THEN 'index' ELSE 'table' END, c.relname, "
            "CASE c.relkind WHEN 'i' THEN pg_relation_size(c.oid) ELSE pg_table_size(c.oid) END "
            "FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'i')"
        ).fetchall()
    return sorted(((t, n, int(b)) for t, n, b in rows), key=lambda r: -r[2])


def signed_post(client: httpx.Client, url: str, body: dict[str, Any]) -> tuple[float, Any]:
    """One callback, signed with a nonce of its own: (milliseconds to the answer, the answer)."""
    raw, headers = signed_request(body)
    began = time.perf_counter()
    response = client.post(url + "/webhooks/sinch", content=raw, headers=headers)
    return (time.perf_counter() - began) * 1000, response


def time_chatty(url: str, start: int, count: int = 15, fresh: bool = False) -> float:
    """Median ms to record one more inbound message of the chatty contact, one at a time; with
    `fresh`, the first message of as many new contacts instead (the same work on a stream of
    one event, at the same moment: what the store as a whole costs then)."""
    times = []
    with httpx.Client(timeout=30) as client:
        for n in range(start, start + count):
            body = chatty_inbound(n, "T")
            if fresh:
                body["message"]["contact_id"] = f"01HFRESH{n:018d}"
            elapsed_ms, response = signed_post(client, url, body)
            times.append(elapsed_ms)
            if response.status_code != 200:
                raise RuntimeError(f"chatty message refused: {response.text}")
    return statistics.median(times)


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
            f"{'others':>7} {'written B/cb':>12} {'blk reads/cb':>12}",
            flush=True,
        )
        for index in range(args.slices):
            bodies = callback_mix(per_slice - chatty_per_slice, seed=index + 1)
            bodies += [chatty_inbound(chatty_sent + k, "B") for k in range(chatty_per_slice)]
            chatty_sent += chatty_per_slice
            for body in bodies:
                report = body.get("message_delivery_report")
                if report:
                    expected.add((report["message_id"], report["status"]))
            result = send_once(server.port, bodies, f"{name[:2]}{index:03d}", args.connections)
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
            }
            rows.append(row)
            print(
                f"{row['slice']:>5} {row['rate']:>12,.0f} {row['p99_ms']:>8.1f} "
                f"{row['rss_mb']:>8.0f} {row['db_mb']:>8.0f} {chatty_ms:>10.1f} "
                f"{srv_ms:>14.2f} {db_ms:>13.2f} {lag:>7} {catch_up_s:>10.1f} "
                f"{chatty_idle_ms:>15.1f} {fresh_ms:>9.1f} {client:>7.2f} {others:>7.2f} "
                f"{written_per_cb:>12,.0f} {reads_per_cb:>12.2f}",
                flush=True,
            )
    finally:
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
        f"{summary['last_vs_first_rate']:.2f}x the first; RSS over the second half "
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
        shutil.rmtree(work, ignore_errors=True)
    print("SOAK " + orjson.dumps(summaries).decode(), flush=True)
    return 1 if any(s["lost"] or s["non2xx"] for s in summaries) else 0


if __name__ == "__main__":
    sys.exit(main())
