"""Faults with real processes: a server killed mid-load, and two servers racing on one store.
A 2xx is a promise: everything acknowledged is in the log exactly once, and the projections
heal to what a replay from scratch gives. (Database outage: test_server_process.py; projection
worker kills: test_projection_crash.py.)"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from service.replay import replay
from service.settings import Settings
from tests import payloads as p
from tests.conftest import SECRET
from tests.helpers import REPORT_EVENTS, projection_rows, stored_events
from tests.server import Server

STATUSES = ["QUEUED_ON_CHANNEL", "SWITCHING_CHANNEL", "FAILED", "DELIVERED", "READ"]


def report_key(body: dict) -> tuple:
    r = body["message_delivery_report"]
    return (r["message_id"], r["channel_identity"]["channel"], r["status"])


def stored_report_keys(database_url: str) -> Counter:
    return Counter(
        (e.message_id, e.channel, e.status)
        for e in stored_events(database_url)
        if type(e).__qualname__ in REPORT_EVENTS
    )


def send(server: Server, body: dict, client: httpx.Client) -> int:
    raw = p.encode(body)
    return client.post(
        server.url + "/webhooks/sinch", content=raw, headers=p.signed_headers(raw, SECRET)
    ).status_code


def start(database_url: str, tmp_path: Path, name: str) -> Server:
    return Server(
        {"LEDGER_DATABASE_URL": database_url, "SINCH_WEBHOOK_SECRET": SECRET},
        tmp_path / f"{name}.log",
    )


def wait_caught_up(server: Server, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        health = httpx.get(server.url + "/healthz", headers=server.headers, timeout=10).json()
        if all(p["lag"] == 0 for p in health["projections"].values()):
            return
        assert time.monotonic() < deadline, health
        time.sleep(0.1)


def assert_restart_heals_to_a_replay(
    database_url: str, settings: Settings, tmp_path: Path, more: list[dict]
) -> None:
    """A restarted server takes `more`, its projections catch up, and they equal a replay."""
    server = start(database_url, tmp_path, "restarted")
    try:
        with httpx.Client(timeout=10) as client:
            assert all(send(server, body, client) == 200 for body in more)
        wait_caught_up(server)
        live = projection_rows(database_url)
    finally:
        server.stop()
    replay(settings)
    assert projection_rows(database_url) == live


def load_until_killed(server: Server, bodies: list[dict], kill_after_s: float) -> tuple[int, list]:
    """16 senders work through `bodies` until the server is SIGKILLed after `kill_after_s`;
    how many were sent, and the bodies that got a 200."""
    acked: list[dict] = []
    sent = 0
    lock = threading.Lock()
    work = iter(bodies)

    def worker() -> None:
        nonlocal sent
        with httpx.Client(timeout=10) as client:
            for body in work:
                with lock:
                    sent += 1
                try:
                    status = send(server, body, client)
                except httpx.TransportError:
                    return
                if status == 200:
                    with lock:
                        acked.append(body)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    time.sleep(kill_after_s)
    server.stop(sig=9)
    for t in threads:
        t.join()
    return sent, acked


def test_kill_9_under_load_loses_nothing_acknowledged(
    database_url: str, settings: Settings, tmp_path: Path
) -> None:
    rng = random.Random(3)
    bodies = [
        p.delivery(
            f"M{i // 5}",
            STATUSES[i % 5],
            rng.choice(["SMS", "RCS"]),
            event_time=f"2024-06-15T10:{i % 60:02d}:00Z",
        )
        for i in range(10000)
    ]
    bodies += rng.sample(bodies, 1000)
    rng.shuffle(bodies)
    server = start(database_url, tmp_path, "first")
    sent, acked = load_until_killed(server, bodies, 1.5)
    in_flight = sent - len(acked)
    assert acked, "nothing was acknowledged before the kill"
    assert sent < len(bodies), "the load ended before the kill; make it longer"

    stored = stored_report_keys(database_url)
    assert all(count == 1 for count in stored.values())  # exactly once
    lost = [b for b in acked if report_key(b) not in stored]
    assert lost == [], f"{len(lost)} acknowledged callbacks lost"
    print(
        f"kill -9: sent {sent}, acknowledged {len(acked)}, in flight {in_flight}, "
        f"stored {len(stored)}, lost 0"
    )

    rest = [b for b in bodies if report_key(b) not in stored]
    assert_restart_heals_to_a_replay(database_url, settings, tmp_path, rest[:300])


def test_two_processes_racing_store_each_report_once(database_url: str, tmp_path: Path) -> None:
    first, second = start(database_url, tmp_path, "a"), start(database_url, tmp_path, "b")
    try:
        distinct = [
            p.delivery(f"M{m}", s, c)
            for m in range(30)
            for s in STATUSES
            for c in ("SMS", "WHATSAPP")
        ]
        jobs = [(server, body) for body in distinct for server in (first, second)]
        random.Random(9).shuffle(jobs)
        local = threading.local()

        def post(job: tuple[Server, dict]) -> int:
            # One client per thread: an httpx.Client is not to be shared across threads.
            if not hasattr(local, "client"):
                local.client = httpx.Client(timeout=30)
            return send(job[0], job[1], local.client)

        with ThreadPoolExecutor(16) as pool:
            statuses = list(pool.map(post, jobs))
    finally:
        first.stop()
        second.stop()
    assert Counter(statuses) == {200: len(jobs)}
    stored = stored_report_keys(database_url)
    assert len(stored) == len(distinct)
    assert set(stored.values()) == {1}


@pytest.mark.slow
def test_repeated_kill_9_cycles(database_url: str, settings: Settings, tmp_path: Path) -> None:
    """The long form: five kill -9 / restart cycles under load, then every acknowledged
    callback of every cycle is checked."""
    rng = random.Random(5)
    acked: list[dict] = []
    sent = 0
    for cycle in range(5):
        bodies = [
            p.delivery(f"C{cycle}M{i // 5}", STATUSES[i % 5], rng.choice(["SMS", "RCS"]))
            for i in range(6000)
        ]
        server = start(database_url, tmp_path, f"cycle{cycle}")
        cycle_sent, cycle_acked = load_until_killed(server, bodies, rng.uniform(1.0, 3.0))
        sent += cycle_sent
        acked += cycle_acked
    stored = stored_report_keys(database_url)
    assert set(stored.values()) == {1}
    lost = [b for b in acked if report_key(b) not in stored]
    print(f"5 kill -9 cycles: sent {sent}, acknowledged {len(acked)}, lost {len(lost)}")
    assert lost == []
    assert_restart_heals_to_a_replay(database_url, settings, tmp_path, [])
