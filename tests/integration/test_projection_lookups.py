"""The read tables' rows by key (`select_by_keys`, what the projections read for every page of
the log): the right rows, each once, found by the primary key rather than by reading the whole
table, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from store.db import Cursor, Database, select_by_keys

TABLE = "lookup_probe"


class Spy:
    """A driver cursor that remembers the last statement it ran."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.sql = ""
        self.params: Any = ()

    def execute(self, sql: str, params: Any = ()) -> Any:
        self.sql, self.params = sql, params
        return self.raw.execute(sql, params)

    def fetchall(self) -> Any:
        return self.raw.fetchall()


def fill(db: Database, n: int) -> None:
    with db.transaction() as cur:
        cur.execute(
            f"CREATE TABLE {TABLE} (project_id TEXT NOT NULL, message_id TEXT NOT NULL, "
            "reports TEXT, contact_id TEXT, PRIMARY KEY (project_id, message_id))"
        )
        cur.execute(f"CREATE INDEX ix_{TABLE}_contact ON {TABLE} (contact_id)")
        cur.executemany(
            f"INSERT INTO {TABLE} VALUES (?, ?, ?, ?)",
            [("P1", f"M{i:06d}", f"r{i}", f"C{i % 7}") for i in range(n)],
        )


def test_rows_by_key_each_once(database_url: str) -> None:
    db = Database(database_url)
    try:
        fill(db, 1000)
        keys = [("P1", "M000007"), ("P1", "M000999"), ("P1", "nope"), ("P2", "M000007")]
        keys += [("P1", "M000007")]  # given twice
        keys += [("P1", f"M{i:06d}") for i in range(100, 500)]  # more than one chunk
        with db.read() as cur:
            rows = select_by_keys(
                cur,
                TABLE,
                ("project_id", "message_id", "reports"),
                ("project_id", "message_id"),
                keys,
            )
            assert select_by_keys(cur, TABLE, ("reports",), ("project_id", "message_id"), []) == []
        found = sorted((r["project_id"], r["message_id"], r["reports"]) for r in rows)
        expected = [("P1", "M000007", "r7"), ("P1", "M000999", "r999")]
        expected += [("P1", f"M{i:06d}", f"r{i}") for i in range(100, 500)]
        assert found == sorted(expected)
    finally:
        db.close()


def test_sqlite_finds_rows_by_the_primary_key(tmp_path: Any) -> None:
    """A row-value `IN (VALUES ...)` made SQLite read the whole table for every chunk of keys:
    the projections' cost per page grew with the table (found by the soak)."""
    db = Database(f"sqlite:///{tmp_path}/lookups.sqlite3")
    try:
        fill(db, 2000)
        with db.read() as cur:
            spy = Spy(cur.raw)
            select_by_keys(
                Cursor(spy, cur.backend),
                TABLE,
                ("reports",),
                ("project_id", "message_id"),
                [("P1", "M000001"), ("P1", "M000002")],
            )
            plan = [
                str(tuple(row)[3])
                for row in cur.raw.execute(f"EXPLAIN QUERY PLAN {spy.sql}", spy.params).fetchall()
            ]
    finally:
        db.close()
    on_table = [step for step in plan if " t" in step or TABLE in step]
    assert on_table, plan
    assert all(step.startswith("SEARCH") for step in on_table), plan
    assert any("INDEX sqlite_autoindex" in step for step in on_table), plan
