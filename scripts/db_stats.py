"""What a store holds and costs, read from the database: its event count, size on disk (table
by table), the PostgreSQL backends serving it and the blocks they read.
"""

from __future__ import annotations

import os

import psycopg

from service.settings import Settings, open_ledger


def event_count(database_url: str) -> int:
    ledger = open_ledger(Settings.from_env({**os.environ, "LEDGER_DATABASE_URL": database_url}))
    try:
        return ledger.ping()
    finally:
        ledger.close()


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
