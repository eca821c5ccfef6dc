"""HTTP limits of a real `serve` process, with real sockets on loopback, bounded in time:
oversized and endless heads, too many headers, slow-loris, idle keep-alive connections and
the connection limit."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_hostile import read_response
from tests.postgres_server import free_port
from tests.server import Server

HEAD = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    started = Server(
        {
            "LEDGER_DATABASE_URL": f"sqlite:///{tmp_path}/x.sqlite3",
            "LEDGER_HEADER_TIMEOUT_S": "2",
            "LEDGER_KEEPALIVE_S": "1",
            "LEDGER_MAX_CONNECTIONS": "20",
            "LEDGER_MAX_HEADER_BYTES": "16384",
        },
        tmp_path / "server.log",
    )
    yield started
    started.stop()


def connect(server: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def answer_or_close(conn: socket.socket) -> bytes:
    """Everything the server sends until it closes (a reset counts as closed)."""
    got = b""
    try:
        while chunk := conn.recv(65536):
            got += chunk
    except ConnectionResetError:
        pass
    return got


def closed_within(conn: socket.socket, seconds: float) -> tuple[bytes, float]:
    conn.settimeout(seconds)
    started = time.monotonic()
    got = answer_or_close(conn)
    return got, time.monotonic() - started


def test_an_oversized_head_is_refused_and_the_connection_closed(server: Server) -> None:
    with connect(server) as conn:
        conn.sendall(HEAD)
        sent = 0
        try:
            while sent < 16 * 1024 * 1024:  # the 16 MB header once accepted
                conn.sendall(b"X-Big: " + b"a" * 65536 + b"\r\n")
                sent += 65536
        except (BrokenPipeError, ConnectionResetError):
            pass
        got, _ = closed_within(conn, 5)
    assert sent < 16 * 1024 * 1024, "the server kept reading"
    assert got == b"" or got.startswith(b"HTTP/1.1 431"), got[:200]


def test_many_headers_are_refused(server: Server) -> None:
    with connect(server) as conn:
        conn.sendall(HEAD + b"".join(b"a%d: b\r\n" % i for i in range(150)) + b"\r\n")
        got, _ = closed_within(conn, 5)
    assert got.startswith(b"HTTP/1.1 431"), got[:200]
    assert b"over 100 header lines" in got
    with connect(server) as conn:  # 100,000 headers: over the head's size first
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.sendall(HEAD + b"".join(b"a%d: b\r\n" % i for i in range(100_000)) + b"\r\n")
        got, _ = closed_within(conn, 5)
    assert got == b"" or got.startswith(b"HTTP/1.1 431"), got[:200]


def test_a_slow_loris_is_cut_after_the_header_timeout(server: Server) -> None:
    with connect(server) as conn:
        conn.sendall(HEAD)
        started = time.monotonic()
        got = b""
        try:
            while time.monotonic() - started < 10:
                conn.sendall(b"X-A: b\r\n")  # a header line every 0.2 s, never the end
                conn.settimeout(0.2)
                try:
                    got += conn.recv(4096)
                    if got:
                        break
                except TimeoutError:
                    pass
        except (BrokenPipeError, ConnectionResetError):
            pass
        elapsed = time.monotonic() - started
    assert 1.5 < elapsed < 5, elapsed
    assert got.startswith(b"HTTP/1.1 408"), got[:200]


def test_silent_and_idle_keep_alive_connections_are_closed(server: Server) -> None:
    with connect(server) as silent, connect(server) as idle:
        idle.sendall(HEAD + b"\r\n")
        idle.settimeout(5)
        assert read_response(idle).startswith(b"HTTP/1.1 200")
        got, elapsed = closed_within(idle, 5)
        assert got == b"" and elapsed < 3  # LEDGER_KEEPALIVE_S=1
        got, elapsed = closed_within(silent, 5)
        assert got == b"" and elapsed < 3  # LEDGER_HEADER_TIMEOUT_S=2, from its connect


def test_over_the_connection_limit_503_then_clients_get_through(server: Server) -> None:
    idle = [connect(server) for _ in range(25)]  # past LEDGER_MAX_CONNECTIONS=20
    try:
        time.sleep(0.3)
        started = time.monotonic()
        refused = httpx.get(server.url + "/healthz", timeout=5)
        assert refused.status_code == 503
        assert time.monotonic() - started < 2
        time.sleep(2.5)  # the header timeout cuts the idle ones
        assert httpx.get(server.url + "/healthz", timeout=5).status_code == 200
    finally:
        for conn in idle:
            conn.close()


def test_past_twice_the_limit_connections_are_closed_at_once(server: Server) -> None:
    held = [connect(server) for _ in range(40)]  # twice LEDGER_MAX_CONNECTIONS
    try:
        time.sleep(0.3)
        with connect(server) as extra:
            got, elapsed = closed_within(extra, 5)
        assert got == b"" and elapsed < 1
    finally:
        for conn in held:
            conn.close()


def test_the_fd_soft_limit_is_raised_to_the_hard_limit(server: Server) -> None:
    limits = Path(f"/proc/{server.process.pid}/limits").read_text()
    line = next(row for row in limits.splitlines() if row.startswith("Max open files"))
    soft, hard = line.split()[3:5]
    assert soft == hard, line


def test_a_busy_keep_alive_connection_is_never_cut(server: Server) -> None:
    """The head limits apply to each request's head: a connection that carries many requests,
    more bytes in all than one head may have and for longer than the header timeout, is served
    to the end (Sinch keeps its connections open)."""
    body = b'{"project_id": "P", "event": {"x": "' + b"y" * 600 + b'"}}'
    statuses = []
    began = time.monotonic()
    with httpx.Client(base_url=server.url, timeout=10) as client:
        while time.monotonic() - began < 3:  # past the 2 s header timeout
            statuses.append(
                client.post("/webhooks/sinch", content=body, headers={"x": "y" * 500}).status_code
            )
            time.sleep(0.01)
    assert len(statuses) * (len(body) + 500) > 16384 * 3  # well past one head's limit
    assert set(statuses) == {200}


# The app under uvicorn with the guarded h11 protocol, as serve runs it where httptools is not
# installed (serve picks httptools when it is).
H11_MAIN = """
import sys, uvicorn
from api.app import app_from_env
from api.connections import GuardedH11
from service.settings import Settings
limit = Settings.from_env().max_header_bytes
uvicorn.run(app_from_env(), port=int(sys.argv[1]), http=GuardedH11,
            h11_max_incomplete_event_size=limit, log_level="warning")
"""


class H11Server(Server):
    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = env
        self._key = None
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-c", H11_MAIN, str(self.port)],
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._wait_until_listening()


@pytest.fixture(params=["serve", "h11"])
def default_limits(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    """A server with the default head limit (LEDGER_MAX_HEADER_BYTES: 32,768): `serve` (with
    httptools), and the app under uvicorn's h11 with the same guard."""
    env = {"LEDGER_DATABASE_URL": f"sqlite:///{tmp_path}/x.sqlite3"}
    kind = H11Server if request.param == "h11" else Server
    started = kind(env, tmp_path / "s.log")
    yield started
    started.stop()


def head_of(size: int) -> bytes:
    """A whole GET /healthz head of exactly `size` bytes."""
    pad = size - len(HEAD) - len(b"X-Pad: \r\n\r\n")
    return HEAD + b"X-Pad: " + b"a" * pad + b"\r\n\r\n"


@pytest.mark.parametrize("size", [32 * 1024 + 1, 33 * 1024, 64 * 1024, 130 * 1024])
def test_a_head_over_the_limit_is_refused_however_it_arrives(
    default_limits: Server, size: int
) -> None:
    for pieces in (1, 7):  # in one read, or in several
        head = head_of(size)
        with connect(default_limits) as conn:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                step = -(-len(head) // pieces)
                for start in range(0, len(head), step):
                    conn.sendall(head[start : start + step])
                    if pieces > 1:
                        time.sleep(0.05)
            got, _ = closed_within(conn, 5)
        assert got.startswith(b"HTTP/1.1 431"), (pieces, got[:200])
        assert b"the request head is over 32768 bytes" in got


def test_a_head_within_the_limit_passes_with_a_body_in_the_same_read(
    default_limits: Server,
) -> None:
    with connect(default_limits) as conn:
        conn.sendall(head_of(32 * 1024))
        assert read_response(conn).startswith(b"HTTP/1.1 200")
    # A small head and a body far past the head limit, sent at once: the body is not the head.
    body = b'{"not": "a callback"}' + b" " * (200 * 1024)
    post = b"POST /webhooks/sinch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    with connect(default_limits) as conn:
        conn.sendall(post + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        answer = read_response(conn)
    assert not answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
