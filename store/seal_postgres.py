"""PostgreSQL's application recorder with the seal chain (store.seal): each batch's seal row is
inserted after its events' COPY, in the same transaction and under the same EXCLUSIVE table
lock, by one statement that reads the previous seal and the last notification id itself
(SHA-256 is PostgreSQL's `sha256`), so the group commit's asynchronous path and the recorder's
own both seal without another round trip."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import StoredEvent
from psycopg.sql import SQL, Composed, Identifier

from store import seal
from store.dedupe import Row
from store.postgres import (
    CopyInsert,
    FailFastApplicationRecorder,
    FailFastPostgresFactory,
)

CREATE = (
    "CREATE TABLE {0} (position bigint PRIMARY KEY, first_id bigint NOT NULL, "
    "events bigint NOT NULL, batch bytea NOT NULL, locator bytea NOT NULL, "
    "previous bytea NOT NULL, seal bytea NOT NULL, sealed_at text NOT NULL)"
)
# The events' ids in one COPY under the table lock follow each other: the batch is the last
# `n` of them.
SEAL = (
    "INSERT INTO {0} (position, first_id, events, batch, locator, previous, seal, sealed_at) "
    "SELECT h.position, h.position - %(n)s + 1, %(n)s, %(batch)s, %(locator)s, p.previous, "
    "sha256(p.previous || %(batch)s), %(at)s "
    "FROM (SELECT MAX(notification_id) AS position FROM {1}) h, "
    "(SELECT COALESCE((SELECT seal FROM {0} ORDER BY position DESC LIMIT 1), %(genesis)s) "
    "AS previous) p"
)


class SealedPostgresApplicationRecorder(FailFastApplicationRecorder):
    def seals_table(self) -> Composed:
        return SQL("{0}.{1}").format(Identifier(self.datastore.schema), Identifier(seal.TABLE))

    def events_table(self) -> Composed:
        return SQL("{0}.{1}").format(
            Identifier(self.datastore.schema), Identifier(self.events_table_name)
        )

    def create_table(self) -> None:
        super().create_table()
        self.create_once(seal.TABLE, self._create_seals)

    def _create_seals(self, conn: Any) -> None:
        conn.execute(SQL(CREATE).format(self.seals_table()))

    def copy_insert(
        self, stored_events: Sequence[StoredEvent], dedupe: Sequence[Row]
    ) -> CopyInsert:
        insert = super().copy_insert(stored_events, dedupe)
        batch = seal.Batch.of(
            (e.originator_id, e.originator_version, e.topic, e.state) for e in stored_events
        )
        params = {
            "n": batch.events,
            "batch": batch.digest,
            "locator": batch.locator,
            "at": seal.now(),
            "genesis": seal.GENESIS,
        }
        statement = SQL(SEAL).format(self.seals_table(), self.events_table())
        return CopyInsert(
            insert.begin,
            insert.copies,
            [*insert.after, (statement, params)],
            insert.keys,
            insert.keys_statement,
        )


class SealedPostgresFactory(FailFastPostgresFactory):
    application_recorder_class = SealedPostgresApplicationRecorder
