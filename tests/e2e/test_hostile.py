"""Hostile input: fuzzed bodies and headers, absurd sizes and shapes, replays and slow
senders. Always a clear 4xx (or 200 for a body we can keep), never a 500, never an event from
an unsigned body while a secret is set."""

from __future__ import annotations

import re
import socket
import time

from tests.server import Server


def read_response(conn: socket.socket) -> bytes:
    """One whole HTTP response: its head and body may arrive in separate reads."""
    answer = b""
    while b"\r\n\r\n" not in answer and (chunk := conn.recv(4096)):
        answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    length = re.search(rb"content-length: *(\d+)", head, re.IGNORECASE)
    while length and len(body) < int(length.group(1)) and (chunk := conn.recv(4096)):
        body += chunk
    return head + b"\r\n\r\n" + body


def test_slow_body_gets_408_in_bounded_time(tmp_path) -> None:
    server = Server(
        {"LEDGER_DATABASE_URL": f"sqlite:///{tmp_path}/x.sqlite3", "LEDGER_BODY_TIMEOUT_S": "1"},
        tmp_path / "server.log",
    )
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
            conn.sendall(
                b"POST /webhooks/sinch HTTP/1.1\r\nHost: x\r\n"
                b'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"a":'
            )
            started = time.monotonic()
            answer = read_response(conn)
            assert time.monotonic() - started < 5
        assert answer.startswith(b"HTTP/1.1 408")
        assert b"took more than 1 s" in answer
    finally:
        server.stop()
