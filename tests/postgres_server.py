"""Finds a PostgreSQL for tests and benchmarks, or starts one of our own.

Order: LEDGER_TEST_POSTGRES_URL; the machine's server at 127.0.0.1:5432; `pg_ctlcluster` to
start the machine's cluster; `initdb` into a temp dir on a free port. Never stops or
reconfigures a server it did not start."""

from __future__ import annotations

import contextlib
import glob
import os
import queue
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg

LOCAL_CANDIDATES = (
    "postgresql://root@127.0.0.1:5432/postgres",
    "postgresql://postgres@127.0.0.1:5432/postgres",
)


def reachable(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _as_postgres_user(cmd: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root.
    if os.geteuid() == 0 and shutil.which("runuser"):
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


class PrivateServer:
    """A PostgreSQL of our own in a temp dir, for tests that stop and start the database."""

    def __init__(self) -> None:
        initdb, pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
        if not initdb or not pg_ctl:
            raise RuntimeError("no initdb/pg_ctl found: install PostgreSQL (Debian: postgresql)")
        self.pg_ctl = pg_ctl
        self.dir = Path(tempfile.mkdtemp(prefix="ledger-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self.data = self.dir / "data"
        self.port = free_port()
        subprocess.run(
            _as_postgres_user([initdb, "-D", str(self.data), "-A", "trust", "-U", "postgres"]),
            check=True,
            capture_output=True,
        )
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.start()

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=on"
        subprocess.run(
            _as_postgres_user(
                [
                    self.pg_ctl,
                    "-D",
                    str(self.data),
                    "-o",
                    opts,
                    "-l",
                    str(self.dir / "log"),
                    "-w",
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
        )

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(
            _as_postgres_user([self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "stop"]),
            check=False,
            capture_output=True,
        )

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


def find_or_start() -> tuple[str, PrivateServer | None]:
    """An admin URL (able to CREATE DATABASE), and the server we started, if any."""
    explicit = os.environ.get("LEDGER_TEST_POSTGRES_URL")
    if explicit:
        if not reachable(explicit):
            raise RuntimeError(f"LEDGER_TEST_POSTGRES_URL={explicit} is not reachable")
        return explicit, None
    for url in LOCAL_CANDIDATES:
        if reachable(url):
            return url, None
    ctlcluster = shutil.which("pg_ctlcluster")
    if ctlcluster and shutil.which("pg_lsclusters"):
        listing = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True)
        for line in listing.stdout.splitlines():
            version, cluster = line.split()[:2]
            with contextlib.suppress(OSError):
                subprocess.run(
                    [ctlcluster, "--skip-systemctl-redirect", version, cluster, "start"],
                    capture_output=True,
                    timeout=60,
                )
        for _ in range(20):
            for url in LOCAL_CANDIDATES:
                if reachable(url):
                    return url, None
            time.sleep(0.5)
    server = PrivateServer()
    return server.url, server


_database_numbers = iter(range(1, 1 << 30))


def create_database(admin_url: str, prefix: str = "ledger_t", like: str | None = None) -> str:
    """A fresh database next to `admin_url`, its URL: empty, or a copy of the database at URL
    `like` (to which nothing may be connected)."""
    name = f"{prefix}_{os.getpid()}_{next(_database_numbers)}"
    template = f" TEMPLATE {like.rpartition('/')[2]}" if like else ""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}{template}")
    return f"{admin_url.rpartition('/')[0]}/{name}"


def drop_database(admin_url: str, url: str) -> None:
    name = url.rpartition("/")[2]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


class Databases:
    """Fresh, empty databases next to `admin_url`, made ahead and dropped behind by threads of
    their own. A test still gets a database nobody used, but waits neither for CREATE DATABASE
    nor for the checkpoint every DROP DATABASE forces: those run while tests do."""

    def __init__(self, admin_url: str, ahead: int = 2) -> None:
        self.admin_url = admin_url
        self._made: queue.Queue[str | Exception] = queue.Queue(maxsize=ahead)
        self._used: queue.Queue[str | None] = queue.Queue()
        self._closing = threading.Event()
        self._maker = threading.Thread(target=self._make, name="make-databases", daemon=True)
        self._dropper = threading.Thread(target=self._drop, name="drop-databases", daemon=True)
        self._maker.start()
        self._dropper.start()

    def take(self) -> str:
        made = self._made.get(timeout=120)
        if isinstance(made, Exception):
            raise made
        return made

    def give_back(self, url: str) -> None:
        self._used.put(url)

    def close(self) -> None:
        """Drops every database made, used or not; returns once they are gone."""
        self._closing.set()
        while self._maker.is_alive():
            self._drain_made()
            self._maker.join(timeout=0.1)
        self._drain_made()
        self._used.put(None)
        self._dropper.join()

    def _drain_made(self) -> None:
        with contextlib.suppress(queue.Empty):
            while True:
                made = self._made.get_nowait()
                if isinstance(made, str):
                    self._used.put(made)

    def _make(self) -> None:
        while not self._closing.is_set():
            try:
                made: str | Exception = create_database(self.admin_url)
            except Exception as exc:  # the test that takes it reports it
                made = exc
            while True:
                try:
                    self._made.put(made, timeout=0.1)
                    break
                except queue.Full:
                    if self._closing.is_set():
                        if isinstance(made, str):
                            self._used.put(made)
                        return

    def _drop(self) -> None:
        # All the databases given back by now at once: their checkpoints then coalesce.
        with ThreadPoolExecutor(8) as pool:
            closing = False
            while not closing:
                batch = [self._used.get()]
                with contextlib.suppress(queue.Empty):
                    while True:
                        batch.append(self._used.get_nowait())
                closing = None in batch
                urls = [url for url in batch if url is not None]
                list(pool.map(self._drop_one, urls))

    def _drop_one(self, url: str) -> None:
        with contextlib.suppress(psycopg.Error):
            drop_database(self.admin_url, url)
