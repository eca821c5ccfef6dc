"""The side-by-side benchmark (`scripts/bench`): ingest throughput and latency of callback-ledger
against two baselines measured in the same run, a durability check for each receiver, replay
speed and memory, and the live projection lag. Loopback only; every run bounded in time.

    scripts/bench [--duration 10] [--connections 64] [--replay-events 1000000]

Ratios, not absolute numbers, are what compare across machines and commits: the last line is a
one-line summary of them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg

from api.signature import sign
from domain.receipt import Receipt
from projections.log_reader import REPORTS
from store.compression import inflate
from store.config import Settings
from store.group_commit import LRU, execute_many
from store.ledger import Ledger
from tests.postgres_server import (
    create_database,
    drop_database,
    find_or_start,
    free_port,
)

SECRET = "bench-secret"
HERE = Path(__file__).parent
STATUSES = ["QUEUED_ON_CHANNEL", "DELIVERED", "READ"]
LAG_MEASURED = ("callback-ledger pg", "callback-ledger pg+worker")


# ---- the load -------------------------------------------------------------------------------


def envelope(project: str, when: datetime, **trigger: Any) -> dict[str, Any]:
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return {
        "app_id": "01HBENCHAPP0000000000000000",
        "project_id": project,
        "accepted_time": stamp,
        "event_time": stamp,
        **trigger,
    }


def report(
    project: str,
    message: str,
    status: str,
    channel: str,
    number: str,
    contact: str,
    when: datetime,
    reason: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "message_id": message,
        "conversation_id": f"01HCONV{contact}",
        "status": status,
        "channel_identity": {
            "channel": channel,
            "identity": number,
            "app_id": "01HBENCHAPP0000000000000000",
        },
        "contact_id": contact,
        "metadata": f"order-{message[-8:]}",
        "processing_mode": "CONVERSATION",
    }
    if reason:
        body["reason"] = {
            "code": reason,
            "sub_code": "UNSPECIFIED_SUB_CODE",
            "description": "The recipient could not be reached on this channel.",
        }
    return envelope(project, when, message_delivery_report=body)


def callback_mix(n: int, seed: int = 1) -> list[dict[str, Any]]:
    """About n callbacks: several statuses per message, fallbacks and failures, ~10% repeats,
    ~3% inbound (some STOP), ~1% opt-outs, shuffled so reports arrive out of order."""
    rng = random.Random(seed)
    start = datetime(2024, 6, 15, 8, tzinfo=UTC)
    out: list[dict[str, Any]] = []
    i = 0
    while len(out) < int(n * 0.86):
        i += 1
        project = f"PROJECT{i % 4}"
        contact = f"01HCONTACT{rng.randrange(20_000):010d}"
        number = f"4670{rng.randrange(10**7):07d}"
        message = f"01HMSG{seed:02d}{i:014d}"
        when = start + timedelta(seconds=i * 0.05)
        if rng.random() < 0.05:
            out.append(
                report(project, message, "QUEUED_ON_CHANNEL", "WHATSAPP", number, contact, when)
            )
            out.append(
                report(
                    project,
                    message,
                    "SWITCHING_CHANNEL",
                    "WHATSAPP",
                    number,
                    contact,
                    when + timedelta(seconds=1),
                    "RECIPIENT_NOT_REACHABLE",
                )
            )
            channel = "SMS"
        else:
            channel = "WHATSAPP"
        steps = STATUSES[: rng.choice([1, 2, 2, 3])]
        if rng.random() < 0.04:
            steps = ["QUEUED_ON_CHANNEL", "FAILED"]
        for k, status in enumerate(steps):
            reason = "RECIPIENT_NOT_REACHABLE" if status == "FAILED" else None
            out.append(
                report(
                    project,
                    message,
                    status,
                    channel,
                    number,
                    contact,
                    when + timedelta(seconds=2 + k),
                    reason,
                )
            )
        if rng.random() < 0.035:
            text = rng.choice(["STOP", "Thanks!", "stop", "When does it arrive?"])
            out.append(
                envelope(
                    project,
                    when,
                    message={
                        "id": f"01HIN{seed:02d}{i:014d}",
                        "direction": "TO_APP",
                        "contact_message": {"text_message": {"text": text}},
                        "channel_identity": {"channel": "SMS", "identity": number},
                        "contact_id": contact,
                        "accept_time": out[-1]["event_time"],
                    },
                )
            )
        if rng.random() < 0.012:
            out.append(
                envelope(
                    project,
                    when,
                    opt_out_notification={
                        "contact_id": contact,
                        "channel": "SMS",
                        "identity": number,
                        "status": "OPT_OUT_SUCCEEDED",
                        "request_id": f"01HREQ{seed:02d}{i:014d}",
                    },
                )
            )
    out += rng.sample(out, k=n - len(out))  # repeats, as retries and several webhooks give
    # Out of order: shuffle within windows, so a message's reports still arrive close together.
    for begin in range(0, len(out), 64):
        window = out[begin : begin + 64]
        rng.shuffle(window)
        out[begin : begin + 64] = window
    return out


def write_signed(path: Path, bodies: list[dict[str, Any]]) -> None:
    timestamp = str(int(time.time()))
    with path.open("w") as f:
        for n, body in enumerate(bodies):
            raw = orjson.dumps(body)
            nonce = f"{n:026d}"
            f.write(
                f"{nonce}\t{timestamp}\t{sign(SECRET, raw, nonce, timestamp)}\t{raw.decode()}\n"
            )


# ---- receivers ------------------------------------------------------------------------------


class Receiver:
    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (log_dir / f"{name.replace(' ', '_')}.log").open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                *args,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ],
            env={**os.environ, **env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.post(self.url + "/webhooks/sinch", content=b"{}", timeout=5)
                return
            except httpx.TransportError:
                time.sleep(0.2)
        raise RuntimeError(f"{name} did not start; see {self.log.name}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def run_wrk(url: str, corpus: Path, duration: int, connections: int) -> dict[str, Any]:
    done = subprocess.run(
        [
            "wrk",
            "-t",
            "2",
            "-c",
            str(connections),
            "-d",
            f"{duration}s",
            "--timeout",
            "10s",
            "-s",
            str(HERE / "bench.lua"),
            url + "/webhooks/sinch",
            "--",
            str(corpus),
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=duration + 120,
    )
    found = re.search(r"^WRK (\{.*\})$", done.stdout, re.M)
    if not found:
        raise RuntimeError(f"wrk failed: {done.stdout}\n{done.stderr}")
    result: dict[str, Any] = orjson.loads(found.group(1))
    result["rate"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


def signed_request(body: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    """A callback's bytes and its signature headers, with a nonce of its own."""
    raw = orjson.dumps(body)
    nonce, ts = os.urandom(10).hex(), str(int(time.time()))
    return raw, {
        "content-type": "application/json",
        "x-sinch-webhook-signature": sign(SECRET, raw, nonce, ts),
        "x-sinch-webhook-signature-nonce": nonce,
        "x-sinch-webhook-signature-timestamp": ts,
    }


async def _post_all(url: str, bodies: list[dict[str, Any]], concurrency: int) -> list[bool]:
    limits = httpx.Limits(max_connections=concurrency)
    semaphore = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def one(body: dict[str, Any]) -> bool:
            raw, headers = signed_request(body)
            async with semaphore:
                try:
                    response = await client.post(
                        url + "/webhooks/sinch", content=raw, headers=headers
                    )
                except httpx.TransportError:
                    return False
            return response.status_code == 200

        return await asyncio.gather(*(one(b) for b in bodies))


def durability_corpus(name: str, n: int = 1000) -> list[dict[str, Any]]:
    when = datetime(2024, 6, 16, tzinfo=UTC)
    return [
        report("DURABILITY", f"dur-{name}-{i}", STATUSES[i % 3], "SMS", "46700000000", "C", when)
        for i in range(n)
    ]


def stored_reports(database_url: str) -> set[tuple[str, str]]:
    ledger = Ledger.from_settings(Settings(database_url=database_url))
    found: set[tuple[str, str]] = set()
    after = 0
    try:
        while page := ledger.recorder.select_notifications(
            start=after, limit=5000, topics=sorted(REPORTS), inclusive_of_start=False
        ):
            for n in page:
                state = orjson.loads(inflate(n.state))
                found.add((state["message_id"], state["status"]))
            after = page[-1].id
    finally:
        ledger.close()
    return found


def check_durability(receiver: Receiver, kind: str, database_url: str | None) -> str:
    bodies = durability_corpus(receiver.name.replace(" ", "_"))
    acked = asyncio.run(_post_all(receiver.url, bodies, 32))
    acknowledged = [b for b, ok in zip(bodies, acked, strict=True) if ok]
    if kind == "null":
        return f"{len(acknowledged)} acked, none stored (stores nothing)"
    if kind == "insert":
        assert database_url
        with psycopg.connect(database_url) as conn:
            rows = {
                r[0]
                for r in conn.execute(
                    "SELECT body FROM raw_callbacks WHERE body LIKE '%DURABILITY%'"
                )
            }
        lost = sum(orjson.dumps(b).decode() not in rows for b in acknowledged)
    else:
        assert database_url
        stored = stored_reports(database_url)
        lost = sum(
            (b["message_delivery_report"]["message_id"], b["message_delivery_report"]["status"])
            not in stored
            for b in acknowledged
        )
    return f"{len(acknowledged)} acked, {len(acknowledged) - lost} stored, lost {lost}"


def key_headers(database_url: str) -> dict[str, str]:
    """An API key for /healthz's detail (a key is created in the store, as `keys create` does)."""
    from store.db import Database
    from store.keys import SCOPES, KeyStore

    db = Database(database_url)
    try:
        key = KeyStore(db).create(f"bench-{time.time_ns()}", SCOPES)
    finally:
        db.close()
    return {"Authorization": f"Bearer {key}"}


class LagProbe:
    """Samples /healthz during a run: the worst projection lag, in events."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.url = url
        self.headers = headers
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                health = httpx.get(self.url + "/healthz", headers=self.headers, timeout=5).json()
                self.samples.append(max(p["lag"] for p in health["projections"].values()))
            except (httpx.HTTPError, KeyError, ValueError):
                continue

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.samples, default=-1)

    def seconds_to_catch_up(self, limit_s: float = 60) -> float:
        started = time.monotonic()
        while time.monotonic() - started < limit_s:
            health = httpx.get(self.url + "/healthz", headers=self.headers, timeout=5).json()
            if all(p["lag"] == 0 for p in health["projections"].values()):
                return time.monotonic() - started
            time.sleep(0.05)
        return float("inf")


def event_count(database_url: str) -> int:
    ledger = Ledger.from_settings(Settings(database_url=database_url))
    try:
        return ledger.ping()
    finally:
        ledger.close()


# ---- CPU accounting (Linux /proc) ------------------------------------------------------------


def _cpu_of(pid: int) -> tuple[int, float]:
    """(parent pid, CPU seconds so far) of a live process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds() -> tuple[dict[int, float], float]:
    """CPU seconds used so far by every process, each counting its live descendants too (as
    for uvicorn --workers), and by all PostgreSQL processes together."""
    found: dict[int, tuple[int, float]] = {}
    postgres = 0.0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            with open(f"/proc/{pid}/comm") as f:
                comm = f.read().strip()
            found[pid] = _cpu_of(pid)
        except (OSError, IndexError, ValueError):
            continue  # it exited meanwhile
        if comm == "postgres":
            postgres += found[pid][1]
    totals = {pid: cpu for pid, (_, cpu) in found.items()}
    for parent, cpu in found.values():
        while parent in found:
            totals[parent] += cpu
            parent = found[parent][0]
    return totals, postgres


def cpu_split(
    before: tuple[dict[int, float], float], after: tuple[dict[int, float], float], pids: list[int]
) -> dict[str, float]:
    """CPU seconds between two readings: the receiver's processes (with their children) and
    PostgreSQL. The rest of the machine's is not reported: it includes wrk's start-up (reading
    the corpus), which would be charged to the callbacks."""
    (by_pid, postgres), (by_pid_after, postgres_after) = before, after
    server = sum(by_pid_after.get(pid, by_pid.get(pid, 0.0)) - by_pid.get(pid, 0.0) for pid in pids)
    return {"server": server, "postgres": postgres_after - postgres}


# ---- replay ---------------------------------------------------------------------------------


def generate_log(database_url: str, n_events: int) -> int:
    """Writes about n_events through the real write path (group commit of 2,000 callbacks)."""
    ledger = Ledger.from_settings(Settings(database_url=database_url))
    receipt_time = datetime.now(UTC)
    try:
        seed = 0
        while ledger.ping() < n_events:
            seed += 1
            bodies = callback_mix(20_000, seed)
            for begin in range(0, len(bodies), 2000):
                commands = []
                for body in bodies[begin : begin + 2000]:
                    raw = orjson.dumps(body).decode()
                    command = ledger.command_for(body, Receipt(raw, receipt_time, True))
                    if command is not None:
                        commands.append(command)
                execute_many(ledger, commands, LRU(0))
                if ledger.ping() >= n_events:
                    break
        return ledger.ping()
    finally:
        ledger.close()


def tree_peaks_kb(root: int) -> dict[int, int]:
    """The peak resident memory so far (VmHWM, kB) of a process and each of its descendants."""
    parents: dict[int, int] = {}
    for pid in (int(e.name) for e in os.scandir("/proc") if e.name.isdigit()):
        try:
            parents[pid] = _cpu_of(pid)[0]
        except (OSError, IndexError, ValueError):
            continue
    tree, grown = {root}, True
    while grown:
        found = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= found
        grown = bool(found)
    peaks: dict[int, int] = {}
    for pid in tree:
        try:
            with open(f"/proc/{pid}/status") as f:
                peaks[pid] = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
        except (OSError, StopIteration):
            continue
    return peaks


def measure_replay(database_url: str, jobs: int = 1) -> tuple[float, float, float]:
    """Events/s over both projections, wall seconds, and the peak resident memory of the
    replay's processes (MB; the sum of each one's peak, read every 0.1 s). Not the kernel's
    ru_maxrss: for a forked child it counts this process's own image from before the exec."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "callback_ledger.cli",
            "replay",
            "--fresh",
            "--page-size",
            "5000",
            "--jobs",
            str(jobs),
        ],
        env={**os.environ, "LEDGER_DATABASE_URL": database_url},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    peaks: dict[int, int] = {}
    while True:
        peaks.update(tree_peaks_kb(process.pid))
        finished, status = os.waitpid(process.pid, os.WNOHANG)
        if finished:
            break
        time.sleep(0.1)
    seconds = time.perf_counter() - started
    if status != 0:
        raise RuntimeError(
            f"replay failed: {process.stderr.read().decode() if process.stderr else ''}"
        )
    # Each process's own peak, added up: at most what they held at any one time.
    return event_count(database_url) / seconds, seconds, sum(peaks.values()) / 1024


def cpu_per(row: dict[str, Any]) -> float:
    """Microseconds of CPU per callback, the receiver's processes and PostgreSQL together."""
    return 1e6 * (row["cpu"]["server"] + row["cpu"]["postgres"]) / max(row["requests"], 1)


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


# ---- main -----------------------------------------------------------------------------------


@contextmanager
def postgres_databases(count: int) -> Iterator[list[str]]:
    admin, server = find_or_start()
    urls = [create_database(admin, "ledger_bench") for _ in range(count)]
    try:
        yield urls
    finally:
        for url in urls:
            drop_database(admin, url)
        if server is not None:
            server.destroy()


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
