"""SQLite copies its write-ahead log into the file every WAL_AUTOCHECKPOINT_PAGES pages, not
SQLite's default 1,000, on every connection that writes (the log's and the read tables'):
otherwise the first connection past 1,000 pages copies them, whatever the others are set to.
The log's file is emptied when the service closes."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import orjson
from starlette.testclient import TestClient

from api.app import create_app
from service.settings import Settings, backend_for
from store.backend import Database
from store.sqlite import WAL_AUTOCHECKPOINT_PAGES
from tests import payloads as p
from tests.conftest import SECRET
from tests.helpers import KEYS

DEFAULT_PAGES = 1000
PAGE = 4096


def _wal_bytes(path: Path) -> int:
    wal = Path(f"{path}-wal")
    return wal.stat().st_size if wal.exists() else 0


def test_the_read_tables_connections_let_the_log_grow_past_the_default(tmp_path: Path) -> None:
    path = tmp_path / "wal.sqlite3"
    # Held open with no transaction (the log outlives one connection, as in serve).
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA journal_mode = WAL")  # as the log's recorder sets it
    holder.execute("SELECT count(*) FROM sqlite_master").fetchall()
    db = Database(backend_for(f"sqlite:///{path}"))
    try:
        with db.transaction() as cur:
            cur.execute("CREATE TABLE scratch (id INTEGER PRIMARY KEY, data BLOB)")
        # Twice the default's pages, in transactions of their own: none copied them.
        for n in range(16):
            with db.transaction() as cur:
                cur.execute("INSERT INTO scratch (data) VALUES (?)", (os.urandom(PAGE * 128),))
            assert _wal_bytes(path) > PAGE * 128 * (n + 1)
        assert _wal_bytes(path) > 2 * DEFAULT_PAGES * PAGE
        assert _wal_bytes(path) < WAL_AUTOCHECKPOINT_PAGES * PAGE
        with db.read() as cur:
            assert cur.execute("SELECT count(*) AS n FROM scratch").fetchone() == {"n": 16}
    finally:
        holder.close()


def test_the_log_writer_lets_the_log_grow_and_a_clean_stop_empties_it(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    settings = Settings(keys=KEYS, database_url=f"sqlite:///{path}", webhook_secrets=(SECRET,))
    with TestClient(create_app(settings)) as client:
        # Metadata of random text, so compression leaves each event about its size.
        for n in range(250):
            body = p.delivery(message_id=f"WAL{n:04d}", metadata=os.urandom(32_000).hex())
            raw = orjson.dumps(body)
            response = client.post(
                "/webhooks/sinch", content=raw, headers=p.signed_headers(raw, SECRET)
            )
            assert response.status_code == 200, response.text
        assert _wal_bytes(path) > 2 * DEFAULT_PAGES * PAGE
    assert _wal_bytes(path) == 0
    assert path.stat().st_size > 150 * 32_000
