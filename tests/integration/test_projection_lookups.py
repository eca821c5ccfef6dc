"""The read tables' rows by key (`select_by_keys`, what the projections read for every page of
the log): the right rows, each once, found by the primary key rather than by reading the whole
table, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from projections import consent, messages
from service.settings import backend_for
from store.backend import Cursor, Database, select_by_keys

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
    db = Database(backend_for(database_url))
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
    db = Database(backend_for(f"sqlite:///{tmp_path}/lookups.sqlite3"))
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


def test_a_message_is_found_by_its_id_alone_through_its_key(database_url: str) -> None:
    """`GET /messages/{id}` without a project asks by the message id alone: the key leads with
    it (projections.messages), so that is one index probe, not a read of the whole table."""
    db = Database(backend_for(database_url))
    table = "message_status_g9"
    try:
        with db.transaction() as cur:
            for statement in messages.schema(9):
                cur.execute(statement)
            cur.executemany(
                f"INSERT INTO {table} (project_id, message_id, status, first_event_time, "
                "last_event_time, report_count, reports) VALUES (?, ?, 'DELIVERED', 't', 't', 1, "
                "'[]')",
                [(f"P{i % 4}", f"01J0DNDV{i:018d}") for i in range(4000)],
            )
        sql = f"SELECT * FROM {table} WHERE message_id = ? LIMIT 2"
        with db.read() as cur:
            if db.backend.name == "sqlite":
                explained = cur.execute(f"EXPLAIN QUERY PLAN {sql}", ["01J0DNDV7"]).fetchall()
                plan = " ".join(row["detail"] for row in explained)
            else:
                cur.execute(f"ANALYZE {table}")
                explained = cur.execute(f"EXPLAIN {sql}", ["01J0DNDV7"]).fetchall()
                plan = " ".join(row["QUERY PLAN"] for row in explained)
    finally:
        db.close()
    assert "SCAN" not in plan.upper().replace("INDEX SCAN", ""), plan


def test_a_number_and_a_contact_are_each_found_through_an_index(database_url: str) -> None:
    """contact_identities is keyed by the number (the consent check's lookup) and indexed by
    the contact (erasure, the console): neither reads the whole table (projections.consent)."""
    db = Database(backend_for(database_url))
    table = "contact_identities_g9"
    try:
        with db.transaction() as cur:
            for statement in consent.schema(9):
                cur.execute(statement)
            cur.executemany(
                f"INSERT INTO {table} (project_id, contact_id, channel, identity) "
                "VALUES (?, ?, 'SMS', ?)",
                [(f"P{i % 4}", f"C{i % 1000}", f"b.{i:022d}") for i in range(4000)],
            )
        plans = []
        for sql, params in (
            (f"SELECT * FROM {table} WHERE channel = ? AND identity = ?", ["SMS", "b.7"]),
            (f"SELECT * FROM {table} WHERE project_id = ? AND contact_id = ?", ["P1", "C7"]),
        ):
            with db.read() as cur:
                if db.backend.name == "sqlite":
                    explained = cur.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()
                    plans.append(" ".join(row["detail"] for row in explained))
                else:
                    cur.execute(f"ANALYZE {table}")
                    explained = cur.execute(f"EXPLAIN {sql}", params).fetchall()
                    plans.append(" ".join(row["QUERY PLAN"] for row in explained))
    finally:
        db.close()
    for plan in plans:
        if db.backend.name == "sqlite":
            assert plan.startswith("SEARCH"), plan
        else:
            assert "Seq Scan" not in plan and "Index" in plan, plan


def test_rows_by_keys_of_bytes(database_url: str) -> None:
    """Keys that are bytes (the data keys' ids, store.data_keys) are sent as such."""
    db = Database(backend_for(database_url))
    blob = "BLOB" if db.backend.name == "sqlite" else "bytea"
    try:
        with db.transaction() as cur:
            cur.execute(f"CREATE TABLE {TABLE}_b (k {blob} PRIMARY KEY, v TEXT)")
            cur.executemany(
                f"INSERT INTO {TABLE}_b VALUES (?, ?)",
                [(bytes([i, 0, 255]), f"v{i}") for i in range(50)],
            )
        with db.read() as cur:
            keys = [(bytes([7, 0, 255]),), (bytes([49, 0, 255]),), (b"\x00",)]
            rows = select_by_keys(cur, f"{TABLE}_b", ("k", "v"), ("k",), keys)
    finally:
        db.close()
    assert sorted((bytes(r["k"]), r["v"]) for r in rows) == [
        (bytes([7, 0, 255]), "v7"),
        (bytes([49, 0, 255]), "v49"),
    ]
