"""The dedupe keys of the Contact streams' facts, in a table of their own.

A Contact remembers only its last facts' keys (domain/contact.py), so a redelivery of an older
inbound message or consent notification is recognised here: `ledger_dedupe(originator_id,
dedupe_key, originator_version)`, primary key (originator_id, dedupe_key), one row per
ConsentReported / InboundMessageReceived event, inserted by the recorder in the SAME transaction
as the events (the library passes `save`'s keyword arguments down to the recorder's
`insert_events`: `dedupe=rows(events)`). So a key is in the table exactly when its event is in
the log, and a second copy of a fact, even from another process deciding at the same moment,
fails the whole transaction on the primary key like a stale version does: the writer reloads
and decides again, and the lookup then finds the key.

Keys are stored as their UTF-8 bytes (`bytea` / BLOB): exact, whatever characters they hold
(PostgreSQL text cannot hold a NUL). The table is created with the store's other tables, while
its log is empty.

SQLite's application recorder is replaced through the library's APPLICATION_RECORDER_TOPIC
(store.sqlite_backend); PostgreSQL's is `postgres.FailFastApplicationRecorder`."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor

from domain.contact import Contact

TABLE = "ledger_dedupe"
FACT_EVENTS = (
    Contact.ConsentReported,
    Contact.InboundMessageReceived,
    Contact.Merged,
    Contact.Deleted,
)

# (stream, key as bytes, version)
Row = tuple[UUID, bytes, int]


def key_bytes(key: str) -> bytes:
    return key.encode("utf-8", "surrogatepass")


def rows(events: Iterable[Any]) -> list[Row]:
    """The key rows of these domain events (only the Contact facts have keys)."""
    return [
        (e.originator_id, key_bytes(e.dedupe_key), e.originator_version)
        for e in events
        if isinstance(e, FACT_EVENTS)
    ]


def create_once(
    recorder: SQLiteApplicationRecorder, table: str, make: Callable[[sqlite3.Cursor], None]
) -> None:
    """Runs `make` (create `table`) unless the table is there. Under the write lock
    (IMMEDIATE), so a process starting at the same moment waits here and then finds the table
    made."""
    with recorder.datastore.get_connection(commit=True) as conn:
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


class DedupeSQLiteApplicationRecorder(SQLiteApplicationRecorder):
    create_statement = (
        f"CREATE TABLE {TABLE} (originator_id TEXT, dedupe_key BLOB, originator_version INTEGER, "
        "PRIMARY KEY (originator_id, dedupe_key)) WITHOUT ROWID"
    )
    insert_statement = f"INSERT INTO {TABLE} VALUES (?, ?, ?)"

    def create_table(self) -> None:
        super().create_table()
        create_once(self, TABLE, self._create_dedupe)

    def _create_dedupe(self, cursor: sqlite3.Cursor) -> None:
        cursor.execute(self.create_statement)

    def _insert_events(
        self,
        c: SQLiteCursor,
        stored_events: Sequence[StoredEvent],
        *,
        dedupe: Sequence[Row] = (),
        **kwargs: Any,
    ) -> Sequence[int] | None:
        notification_ids = super()._insert_events(c, stored_events, **kwargs)
        if dedupe:
            c.sqlite_cursor.executemany(
                self.insert_statement, [(i.hex, k, v) for i, k, v in dedupe]
            )
        return notification_ids

    def recorded(self, pairs: Sequence[tuple[UUID, bytes]]) -> set[tuple[UUID, bytes]]:
        """Which of these (stream, key) pairs the table holds."""
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
            f"JOIN {TABLE} d ON d.originator_id = q.column1 AND d.dedupe_key = q.column2"
        )
