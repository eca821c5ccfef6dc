"""SQLite's application recorder with the seal chain (store.seal): each batch's seal row is
written by the same transaction as its events, after them, so the previous seal is read under
the write lock those inserts took."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import StoredEvent
from eventsourcing.sqlite import SQLiteCursor

from store import format_version, seal, vault_keys
from store.dedupe import DedupeSQLiteApplicationRecorder, create_once
from store.sqlite_backend import CHECKPOINT_PRAGMA
from store.vault import Vault, plaintext

CREATE = (
    f"CREATE TABLE {seal.TABLE} (position INTEGER PRIMARY KEY, first_id INTEGER NOT NULL, "
    "events INTEGER NOT NULL, batch BLOB NOT NULL, locator BLOB NOT NULL, "
    "previous BLOB NOT NULL, seal BLOB NOT NULL, sealed_at TEXT NOT NULL)"
)
INSERT = f"INSERT INTO {seal.TABLE} ({', '.join(seal.COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
LAST = f"SELECT seal FROM {seal.TABLE} ORDER BY position DESC LIMIT 1"


def row(s: seal.Seal) -> tuple[Any, ...]:
    return (s.position, s.first_id, s.events, s.batch, s.locator, s.previous, s.seal, s.sealed_at)


class SealedSQLiteApplicationRecorder(DedupeSQLiteApplicationRecorder):
    """Also writes the data keys (store.vault_keys) the events use, in their transaction.
    `vault` is the Ledger's, set once it knows the store's mode."""

    vault: Vault = plaintext()

    def create_table(self) -> None:
        super().create_table()
        create_once(self, seal.TABLE, self._create_seals)
        create_once(self, vault_keys.TABLE, self._create_keys)
        create_once(self, format_version.TABLE, self._create_format)

    def _create_format(self, cursor: sqlite3.Cursor) -> None:
        found = cursor.execute(f"SELECT 1 FROM {self.events_table_name} LIMIT 1").fetchone()
        format_version.create(cursor.execute, found is None)

    def _create_keys(self, cursor: sqlite3.Cursor) -> None:
        for statement in vault_keys.CREATE:
            cursor.execute(statement)

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        keys = vault_keys.BatchKeys.of(self.vault, (e.state for e in stored_events))
        try:
            notification_ids = super().insert_events(stored_events, data_keys=keys, **kwargs)
        except BaseException:
            self.vault.abandon(keys.new)
            raise
        self.vault.confirm(keys.new)
        return notification_ids

    def _create_seals(self, cursor: sqlite3.Cursor) -> None:
        cursor.execute(CREATE)

    def _insert_events(
        self,
        c: SQLiteCursor,
        stored_events: Sequence[StoredEvent],
        *,
        data_keys: vault_keys.BatchKeys | None = None,
        **kwargs: Any,
    ) -> Sequence[int] | None:
        # Per batch: the library's pool opens connections of its own (a pragma costs less
        # than telling them apart).
        c.sqlite_cursor.execute(CHECKPOINT_PRAGMA)
        if data_keys is not None and data_keys.new:
            c.sqlite_cursor.executemany(
                vault_keys.INSERT, [vault_keys.row(k) for k in data_keys.new]
            )
        notification_ids = super()._insert_events(c, stored_events, **kwargs)
        if data_keys is not None and data_keys.reused:
            # After the inserts took the write lock (a read first would have to upgrade its
            # lock, which SQLite refuses at once under contention): an erasure's DELETE comes
            # before or after this, not during.
            found = c.sqlite_cursor.execute(
                vault_keys.select_reused(len(data_keys.reused)),
                data_keys.reused,
            ).fetchall()
            data_keys.check(self.vault, (bytes(r[0]) for r in found))
        if notification_ids:
            batch = seal.Batch.of(
                (e.originator_id, e.originator_version, e.topic, e.state) for e in stored_events
            )
            cursor = c.sqlite_cursor
            last = cursor.execute(LAST).fetchone()
            previous = seal.GENESIS if last is None else bytes(last[0])
            cursor.execute(
                INSERT, row(seal.sealed(previous, notification_ids[0], notification_ids[-1], batch))
            )
        return notification_ids
