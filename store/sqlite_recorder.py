"""SQLite's application recorder: the dedupe keys (store.dedupe), the data keys
(store.data_keys) and the seal (store.seal) written by the same transaction as the events.
Each batch's seal row comes after its events, so the previous seal is read under the write
lock those inserts took."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor

from store import data_keys as key_rows
from store import format_version, seal
from store.dedupe import TABLE as DEDUPE_TABLE
from store.dedupe import Row
from store.sqlite import CHECKPOINT_PRAGMA
from store.vault import Vault, plaintext

CREATE_SEALS = (
    f"CREATE TABLE {seal.TABLE} (position INTEGER PRIMARY KEY, first_id INTEGER NOT NULL, "
    "events INTEGER NOT NULL, batch BLOB NOT NULL, locator BLOB NOT NULL, "
    "previous BLOB NOT NULL, seal BLOB NOT NULL, sealed_at TEXT NOT NULL)"
)
INSERT_SEAL = (
    f"INSERT INTO {seal.TABLE} ({', '.join(seal.COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
LAST_SEAL = f"SELECT seal FROM {seal.TABLE} ORDER BY position DESC LIMIT 1"
CREATE_DEDUPE = (
    f"CREATE TABLE {DEDUPE_TABLE} (originator_id TEXT, dedupe_key BLOB, "
    "originator_version INTEGER, PRIMARY KEY (originator_id, dedupe_key)) WITHOUT ROWID"
)
INSERT_DEDUPE = f"INSERT INTO {DEDUPE_TABLE} VALUES (?, ?, ?)"


class SealedSQLiteApplicationRecorder(SQLiteApplicationRecorder):
    """`vault` is the Ledger's, set once it knows the store's mode."""

    vault: Vault = plaintext()

    def create_table(self) -> None:
        super().create_table()
        self.create_once(DEDUPE_TABLE, lambda cursor: cursor.execute(CREATE_DEDUPE))
        self.create_once(seal.TABLE, lambda cursor: cursor.execute(CREATE_SEALS))
        self.create_once(key_rows.TABLE, self._create_keys)
        self.create_once(format_version.TABLE, self._create_format)

    def create_once(self, table: str, make: Any) -> None:
        """Runs `make(cursor)` (create `table`) unless the table is there. Under the write lock
        (IMMEDIATE), so a process starting at the same moment waits and then finds it made."""
        with self.datastore.get_connection(commit=True) as conn:
            cursor = conn.cursor().sqlite_cursor
            try:
                cursor.execute("BEGIN IMMEDIATE")
                cursor.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
                )
                if cursor.fetchone() is None:
                    make(cursor)
                cursor.execute("COMMIT")
            except BaseException:
                conn.rollback()
                raise
            finally:
                cursor.close()

    def _create_format(self, cursor: sqlite3.Cursor) -> None:
        found = cursor.execute(f"SELECT 1 FROM {self.events_table_name} LIMIT 1").fetchone()
        format_version.create(cursor.execute, found is None)

    def _create_keys(self, cursor: sqlite3.Cursor) -> None:
        for statement in key_rows.CREATE:
            cursor.execute(statement)

    def recorded(self, pairs: Sequence[tuple[UUID, bytes]]) -> set[tuple[UUID, bytes]]:
        """Which of these (stream, key) pairs the dedupe table holds."""
        if not pairs:
            return set()
        values = ", ".join(["(?, ?)"] * len(pairs))
        params = [x for i, k in pairs for x in (i.hex, k)]
        with self.datastore.transaction(commit=False) as c:
            c.execute(self.recorded_sql(values), params)
            return {(UUID(i), bytes(k)) for i, k in c.fetchall()}

    @staticmethod
    def recorded_sql(values: str) -> str:
        # A join, not `(a, b) IN (VALUES ...)`: SQLite scans the whole table for that.
        return (
            f"SELECT d.originator_id, d.dedupe_key FROM (VALUES {values}) q "
            f"JOIN {DEDUPE_TABLE} d ON d.originator_id = q.column1 AND d.dedupe_key = q.column2"
        )

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        keys = key_rows.BatchKeys.of(self.vault, (e.state for e in stored_events))
        try:
            notification_ids = super().insert_events(stored_events, data_keys=keys, **kwargs)
        except BaseException:
            self.vault.abandon(keys.new)
            raise
        self.vault.confirm(keys.new)
        return notification_ids

    def _insert_events(
        self,
        c: SQLiteCursor,
        stored_events: Sequence[StoredEvent],
        *,
        data_keys: key_rows.BatchKeys | None = None,
        dedupe: Sequence[Row] = (),
        **kwargs: Any,
    ) -> Sequence[int] | None:
        cursor = c.sqlite_cursor
        # Per batch: the library's pool opens connections of its own (a pragma costs less
        # than telling them apart).
        cursor.execute(CHECKPOINT_PRAGMA)
        if data_keys is not None and data_keys.new:
            cursor.executemany(key_rows.INSERT, [key_rows.row(k) for k in data_keys.new])
        notification_ids = super()._insert_events(c, stored_events, **kwargs)
        if dedupe:
            cursor.executemany(INSERT_DEDUPE, [(i.hex, k, v) for i, k, v in dedupe])
        if data_keys is not None and data_keys.reused:
            # After the inserts took the write lock (a read first would have to upgrade its
            # lock, which SQLite refuses at once under contention): an erasure's DELETE comes
            # before or after this, not during.
            found = cursor.execute(
                key_rows.select_reused(len(data_keys.reused)), data_keys.reused
            ).fetchall()
            data_keys.check(self.vault, (bytes(r[0]) for r in found))
        if notification_ids:
            batch = seal.Batch.of(
                (e.originator_id, e.originator_version, e.topic, e.state) for e in stored_events
            )
            last = cursor.execute(LAST_SEAL).fetchone()
            previous = seal.GENESIS if last is None else bytes(last[0])
            s = seal.sealed(previous, notification_ids[0], notification_ids[-1], batch)
            cursor.execute(
                INSERT_SEAL,
                (s.position, s.first_id, s.events, s.batch, s.locator, s.previous, s.seal,
                 s.sealed_at),
            )  # fmt: skip
        return notification_ids
