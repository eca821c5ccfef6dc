"""End to end through a real `callback-ledger serve` process and real HTTP."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests import payloads as p
from tests.conftest import SECRET
from tests.helpers import cli, delivery_reports, names, stored_events
from tests.postgres_server import PrivateServer, free_port
from tests.server import Server


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator:
    servers: list[Server] = []

    def start(database_url: str, secret: str = SECRET, args: tuple[str, ...] = ()) -> Server:
        env = {
            "LEDGER_DATABASE_URL": database_url,
            "SINCH_WEBHOOK_SECRET": secret,
            "LEDGER_DB_TIMEOUT_S": "2",
            "LEDGER_RETRY_AFTER_S": "7",
        }
        server = Server(env, tmp_path / f"server{len(servers)}.log", args)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def post(server: Server, body: dict | bytes, timeout: float = 30.0) -> httpx.Response:
    raw = p.encode(body)
    return httpx.post(
        server.url + "/webhooks/sinch",
        content=raw,
        headers=p.signed_headers(raw, SECRET),
        timeout=timeout,
    )


def test_events_written_by_one_process_are_read_by_the_next(
    start_server, database_url: str
) -> None:
    first = start_server(database_url)
    for seed in ("seed_delivery_report.json", "seed_opt_in.json", "seed_opt_out.json"):
        assert post(first, p.seed(seed)).json()["status"] == "accepted"
    first.stop()

    second = start_server(database_url)
    for seed in ("seed_delivery_report.json", "seed_opt_in.json", "seed_opt_out.json"):
        assert post(second, p.seed(seed)).json()["status"] == "duplicate"
    assert post(second, p.delivery(status="READ")).json()["status"] == "accepted"
    assert (
        httpx.get(second.url + "/healthz", headers=second.headers).json()["events"]
        == len(stored_events(database_url))
        == 5
    )


def test_unsigned_start_logs_a_loud_warning(start_server, database_url: str) -> None:
    server = start_server(database_url, secret="")
    assert "SINCH_WEBHOOK_SECRET is not set" in server.log()


def test_concurrent_http_posts_for_one_message(start_server, database_url: str) -> None:
    server = start_server(database_url)
    statuses = ["QUEUED_ON_CHANNEL", "SWITCHING_CHANNEL", "FAILED", "DELIVERED", "READ"]
    distinct = [p.delivery(status=s, channel=c) for s in statuses for c in ("WHATSAPP", "SMS")]
    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda b: post(server, b), distinct * 4))
    assert Counter(r.status_code for r in responses) == {200: 40}
    assert Counter(r.json()["status"] for r in responses) == {"accepted": 10, "duplicate": 30}
    assert len(delivery_reports(stored_events(database_url))) == 10


def test_database_outage_answers_503_then_heals_without_restart(
    start_server, private_postgres: PrivateServer
) -> None:
    url = private_postgres.url.rsplit("/", 1)[0] + "/postgres"
    server = start_server(url)
    assert post(server, p.delivery(status="QUEUED_ON_CHANNEL")).status_code == 200

    private_postgres.stop()
    started = time.monotonic()
    response = post(server, p.delivery(status="DELIVERED"))
    elapsed = time.monotonic() - started
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "7"
    assert "nothing was stored" in response.json()["detail"]
    assert elapsed < 10, f"503 took {elapsed:.1f}s"
    assert httpx.get(server.url + "/healthz").status_code == 503

    private_postgres.start()
    deadline = time.monotonic() + 20
    while (response := post(server, p.delivery(status="DELIVERED"))).status_code == 503:
        assert time.monotonic() < deadline, "service did not recover"
        time.sleep(0.1)
    assert response.json()["status"] == "accepted"
    assert len(delivery_reports(stored_events(url))) == 2


def test_service_starts_while_database_is_down(
    start_server, private_postgres: PrivateServer
) -> None:
    private_postgres.stop()
    server = start_server(private_postgres.url)
    response = post(server, p.delivery())
    assert response.status_code == 503
    assert "Retry-After".lower() in response.headers
    private_postgres.start()
    deadline = time.monotonic() + 20
    while (response := post(server, p.delivery())).status_code == 503:
        assert time.monotonic() < deadline, "service did not recover"
        time.sleep(0.1)
    assert response.json()["status"] == "accepted"


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def test_several_server_processes_record_each_report_once(
    start_server, database_url: str, backend: str, tmp_path: Path
) -> None:
    if backend == "sqlite":
        refused = cli(database_url, "serve", "--workers", "2")
        assert refused.returncode == 2
        assert "--workers above 1 needs PostgreSQL" in refused.stderr
        return
    server = start_server(database_url, args=("--workers", "2"))
    deadline = time.monotonic() + 20
    while len(children(server.process.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(children(server.process.pid)) >= 2
    statuses = ["QUEUED_ON_CHANNEL", "DELIVERED", "READ"]
    distinct = [p.delivery(f"M{i}", s) for i in range(20) for s in statuses]
    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda b: post(server, b), distinct * 3))
    assert Counter(r.status_code for r in responses) == {200: 180}
    assert Counter(r.json()["status"] for r in responses) == {"accepted": 60, "duplicate": 120}
    assert Counter(names(stored_events(database_url))) == {
        "Message.FirstReported": 20,
        "Message.DeliveryReported": 40,
    }


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_no_acknowledgement_once_the_sqlite_file_is_gone(
    start_server, tmp_path: Path, how: str
) -> None:
    path = tmp_path / "moved" / "ledger.sqlite3"
    path.parent.mkdir()
    server = start_server(f"sqlite:///{path}")
    assert post(server, p.delivery("M-BEFORE")).status_code == 200
    # The key is looked up now, while the file is there, and cached for the detail below.
    assert httpx.get(server.url + "/healthz", headers=server.headers).status_code == 200
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    if how == "replaced":
        path.write_bytes(b"")  # another file now at the path
    answers = [post(server, p.delivery(f"M-{i}")).status_code for i in range(20)]
    assert answers == [503] * 20
    health = httpx.get(server.url + "/healthz", headers=server.headers, timeout=30)
    assert health.status_code == 503
    assert "deleted or replaced" in health.json()["detail"]
    bare = httpx.get(server.url + "/healthz", timeout=30)
    assert (bare.status_code, bare.json()) == (503, {"status": "failing"})
    assert "deleted or replaced" in server.log()


# ---- SQLite files that cannot be written -----------------------------------------------------


@contextlib.contextmanager
def immutable(path: Path) -> Iterator[None]:
    """`path` made immutable (chattr +i: root, on ext4, xfs and similar), as it was found."""
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"chattr +i is not possible here: {done.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def serving_with_shm(start_server, path: Path) -> tuple[Server, Path]:
    server = start_server(f"sqlite:///{path}")
    assert post(server, p.delivery("M-SHM")).status_code == 200
    shm = Path(f"{path}-shm")
    assert shm.exists()  # the store's connections keep it while serving
    return server, shm


def test_serve_refuses_to_start_on_a_shm_it_cannot_write(start_server, tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    server, shm = serving_with_shm(start_server, path)
    server.stop(signal.SIGKILL)  # as a crash leaves it: the -wal and -shm stay
    assert shm.exists()
    with immutable(shm):
        done = subprocess.run(
            [sys.executable, "-m", "callback_ledger.cli", "serve", "--port", str(free_port())],
            env={
                **os.environ,
                "LEDGER_DATABASE_URL": f"sqlite:///{path}",
                "SINCH_WEBHOOK_SECRET": SECRET,
            },
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert done.returncode == 2, done.stderr
    [line] = [line for line in done.stderr.splitlines() if f"{shm}" in line]
    assert "cannot be written" in line and "chattr -i" in line
    # Writable again, it starts, with what was acknowledged before.
    again = start_server(f"sqlite:///{path}")
    assert post(again, p.delivery("M-SHM")).json()["status"] == "duplicate"


def test_a_shm_made_unwritable_while_serving_is_named_in_the_log(
    start_server, tmp_path: Path
) -> None:
    server, shm = serving_with_shm(start_server, tmp_path / "ledger.sqlite3")
    with immutable(shm):
        # SQLite writes through its mapping of the file: the kernel answers with SIGBUS.
        with contextlib.suppress(httpx.TransportError):
            post(server, p.delivery("M-AFTER"), timeout=10)
        server.process.wait(timeout=30)
    assert server.process.returncode == -signal.SIGBUS
    assert "Fatal Python error: Bus error" in server.log()
