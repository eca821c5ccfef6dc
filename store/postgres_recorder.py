"""PostgreSQL persistence that fails fast, and writes the dedupe keys (store.dedupe), the data
keys (store.data_keys) and the seal (store.seal) in the events' transaction.

The library retries every failed read and write ten times, each waiting up to the pool
timeout: during an outage one webhook request would hang for ten timeouts. We answer 503 after
one and the sender retries later; a connection broken by a restart is replaced by the pool.

Events go in by binary COPY under the library's EXCLUSIVE table lock (notification ids become
visible in order, so followers never skip one); the seal row follows in one statement that
reads the previous seal and the last notification id itself (SHA-256 is PostgreSQL's)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import (
    PostgresAggregateRecorder,
    PostgresApplicationRecorder,
    PostgresFactory,
)
from psycopg.sql import SQL, Composed, Identifier, Literal

from store import data_keys, format_version, seal
from store.data_keys import BatchKeys
from store.dedupe import TABLE, Row
from store.vault import Vault, plaintext

# Any number of ours: the advisory lock around the library's table creation.
CREATE_TABLES_LOCK = 4711002


class CreatesTablesOneAtATime(PostgresAggregateRecorder):
    def create_table(self) -> None:
        """The library's, under an advisory lock: processes starting together (`serve
        --workers`, `replay --jobs`) would create its types and tables at once, and
        PostgreSQL refuses one of them ("tuple concurrently updated")."""
        with self.datastore.get_connection() as conn:  # the pool's are autocommit
            conn.execute("SELECT pg_advisory_lock(%s)", (CREATE_TABLES_LOCK,))
            try:
                super().create_table()
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (CREATE_TABLES_LOCK,))


class FailFastAggregateRecorder(CreatesTablesOneAtATime):
    insert_events = PostgresAggregateRecorder.insert_events.__wrapped__
    select_events = PostgresAggregateRecorder.select_events.__wrapped__


COPY_TYPES = ["uuid", "int8", "text", "bytea"]
DEDUPE_COPY_TYPES = ["uuid", "bytea", "int8"]


def copy_row(event: StoredEvent) -> tuple[Any, ...]:
    return (event.originator_id, event.originator_version, event.topic, event.state)


@dataclass(frozen=True)
class CopyInsert:
    """A batch as sent on either connection (the recorder's, or the group commit's
    asynchronous one): `begin` (BEGIN and the table locks), each binary COPY of `copies`
    (statement, column types, rows), the `seal` statement, then `keys_statement`, whose rows
    go to `keys.check`; then COMMIT."""

    begin: Composed
    copies: list[tuple[Composed, list[str], Iterable[tuple[Any, ...]]]]
    seal: tuple[Composed, dict[str, Any]]
    keys: BatchKeys
    keys_statement: tuple[Composed, dict[str, Any]] | None


CREATE_SEALS = (
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


class SealedPostgresApplicationRecorder(CreatesTablesOneAtATime, PostgresApplicationRecorder):
    """Inserts by binary COPY, in fewer round trips than the library (which builds a
    composite-type array per save, costing more CPU than the rest of a callback's handling);
    returns no notification ids (nothing uses them). `vault` is the Ledger's, set once it
    knows the store's mode."""

    vault: Vault = plaintext()

    def create_once(self, table: str, make: Callable[[Any], None]) -> None:
        """Runs `make(conn)` (create `table`) in one transaction
        unless the table is there; processes starting together take turns (advisory lock)."""
        with self.datastore.get_connection() as conn:  # the pool's are autocommit
            conn.execute("SELECT pg_advisory_lock(%s)", (CREATE_TABLES_LOCK,))
            try:
                with conn.transaction():
                    found = conn.execute(
                        "SELECT to_regclass(%s) IS NOT NULL AS present",
                        (f"{self.datastore.schema}.{table}",),
                    ).fetchone()
                    if found is None or not found["present"]:
                        make(conn)
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (CREATE_TABLES_LOCK,))

    def create_table(self) -> None:
        super().create_table()
        self.create_once(TABLE, self._create_dedupe)
        self.create_once(data_keys.TABLE, self._create_keys)
        self.create_once(format_version.TABLE, self._create_format)
        self.create_once(seal.TABLE, self._create_seals)

    def _table(self, name: str) -> Composed:
        return SQL("{0}.{1}").format(Identifier(self.datastore.schema), Identifier(name))

    def _create_seals(self, conn: Any) -> None:
        conn.execute(SQL(CREATE_SEALS).format(self._table(seal.TABLE)))

    def _create_format(self, conn: Any) -> None:
        events = self._table(self.events_table_name)
        # Until this transaction ends no event commits: the log is as empty as it looks.
        conn.execute(SQL("LOCK TABLE {0} IN SHARE MODE").format(events))
        empty = conn.execute(SQL("SELECT 1 FROM {0} LIMIT 1").format(events)).fetchone() is None
        format_version.create(conn.execute, empty, self.datastore.schema)

    def _create_keys(self, conn: Any) -> None:
        for statement in data_keys.create_statements("bytea"):
            conn.execute(
                statement.replace("CREATE TABLE ", f"CREATE TABLE {self.datastore.schema}.")
            )

    def _create_dedupe(self, conn: Any) -> None:
        conn.execute(
            SQL(
                "CREATE TABLE {0} (originator_id uuid, dedupe_key bytea, "
                "originator_version bigint, PRIMARY KEY (originator_id, dedupe_key))"
            ).format(self._table(TABLE))
        )

    def recorded_query(self, pairs: Sequence[tuple[UUID, bytes]]) -> tuple[Composed, list[Any]]:
        """Which of these (stream, key) pairs the dedupe table holds. Run it unprepared
        (`prepare=False`): a prepared statement keeps the generic plan chosen while the table
        was small (a scan of all of it); unprepared, each run is an index lookup per pair."""
        sql = SQL(
            "SELECT d.originator_id, d.dedupe_key FROM {0} d "
            "JOIN unnest(%s::uuid[], %s::bytea[]) AS q(i, k) "
            "ON d.originator_id = q.i AND d.dedupe_key = q.k"
        ).format(self._table(TABLE))
        return sql, [[i for i, _ in pairs], [k for _, k in pairs]]

    def recorded(self, pairs: Sequence[tuple[UUID, bytes]]) -> set[tuple[UUID, bytes]]:
        if not pairs:
            return set()
        sql, params = self.recorded_query(pairs)
        with self.datastore.get_connection() as conn, conn.cursor() as cursor:
            cursor.execute(sql, params, prepare=False)  # see `recorded_query`
            return {(r["originator_id"], bytes(r["dedupe_key"])) for r in cursor.fetchall()}

    def copy_insert(
        self, stored_events: Sequence[StoredEvent], dedupe: Sequence[Row]
    ) -> CopyInsert:
        """The events, their dedupe keys, data keys and seal in one transaction."""
        events = self._table(self.events_table_name)
        copy = SQL(
            "COPY {0} (originator_id, originator_version, topic, state) FROM STDIN (FORMAT BINARY)"
        ).format(events)
        copies: list[tuple[Composed, list[str], Iterable[tuple[Any, ...]]]] = [
            (copy, COPY_TYPES, [copy_row(event) for event in stored_events])
        ]
        if dedupe:
            copy = SQL(
                "COPY {0} (originator_id, dedupe_key, originator_version) FROM STDIN "
                "(FORMAT BINARY)"
            ).format(self._table(TABLE))
            copies.append((copy, DEDUPE_COPY_TYPES, dedupe))
        keys = BatchKeys.of(self.vault, (e.state for e in stored_events))
        locks = list(self.lock_table_statements)
        if keys.new or keys.reused:
            # Taken before any snapshot of the batch: an erasure that destroys keys holds this
            # off until it commits, so `keys_statement` then sees the keys it destroyed gone;
            # and it waits for a batch already holding it (store.data_keys).
            locks.append(
                SQL("LOCK TABLE {0} IN ROW EXCLUSIVE MODE").format(self._table(data_keys.TABLE))
            )
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
        return CopyInsert(
            SQL("; ").join([SQL("BEGIN"), *locks]),
            copies,
            (SQL(SEAL).format(self._table(seal.TABLE), events), params),
            keys,
            self.keys_statement(keys) if keys.new or keys.reused else None,
        )

    def keys_statement(self, keys: BatchKeys) -> tuple[Composed, dict[str, Any]]:
        """One statement: the new keys inserted (not a COPY: ON CONFLICT), and which of the
        reused ones still exist. No row locks (each would write its row): the table lock the
        batch took first keeps an erasure's DELETE out until this COMMIT, or the erasure came
        before and they are missing."""
        table = self._table(data_keys.TABLE)
        # Rows and ids go as one JSON text each: psycopg dumps a list of strings as an array
        # element by element in Python, which cost more than the rest of the statement. An
        # index lookup per id (LATERAL, OFFSET 0): as `key_id = ANY(...)` or a plain join,
        # PostgreSQL guesses 100 ids and, while the table is young, scans all of it instead.
        # Ids travel as hex, both ways.
        select = SQL(
            "SELECT encode(k.key_id, 'hex') AS key_id FROM "
            "json_array_elements_text(%(reused)s::json) AS r(id), LATERAL (SELECT key_id "
            "FROM {0} WHERE key_id = decode(r.id, 'hex') OFFSET 0) k"
        ).format(table)
        params: dict[str, Any] = {"reused": orjson.dumps([k.hex() for k in keys.reused]).decode()}
        if not keys.new:
            return select, params
        params["new"] = orjson.dumps(list(map(data_keys.text_row, keys.new))).decode()
        return SQL("WITH new AS ({0}) {1}").format(self.keys_insert(), select), params

    def keys_insert(self) -> Composed:
        table = self._table(data_keys.TABLE)
        # The JSON holds data_keys.text_row: hex and base64 text for the bytes columns.
        decoded = {"key_id": "hex", "wrapped": "base64"}
        fields = SQL(", ").join(
            SQL("decode(r->>{0}, {1})").format(Literal(i), Literal(decoded[name]))
            if name in decoded
            else SQL("r->>{0}").format(Literal(i))
            for i, name in enumerate(data_keys.COLUMNS)
        )
        return SQL(
            "INSERT INTO {0} ({1}) SELECT {2} FROM json_array_elements(%(new)s::json) AS r "
            "ON CONFLICT DO NOTHING"
        ).format(table, SQL(", ").join(map(Identifier, data_keys.COLUMNS)), fields)

    def insert_events(
        self,
        stored_events: Sequence[StoredEvent],
        *,
        dedupe: Sequence[Row] = (),
        **_: Any,
    ) -> None:
        if not stored_events:
            return None
        insert = self.copy_insert(stored_events, dedupe)
        with self.datastore.get_connection() as conn, conn.cursor() as cursor:
            try:
                cursor.execute(insert.begin)
                for statement, types, rows in insert.copies:
                    with cursor.copy(statement) as copy:
                        copy.set_types(types)
                        for row in rows:
                            copy.write_row(row)
                cursor.execute(*insert.seal)
                if insert.keys_statement is not None:
                    cursor.execute(*insert.keys_statement)
                    found = [bytes.fromhex(r["key_id"]) for r in cursor.fetchall()]
                    insert.keys.check(self.vault, found)
                cursor.execute("COMMIT")
            except BaseException:
                self.vault.abandon(insert.keys.new)
                if not conn.closed:
                    with contextlib.suppress(Exception):
                        cursor.execute("ROLLBACK")
                raise
        self.vault.confirm(insert.keys.new)
        return None

    select_events = PostgresAggregateRecorder.select_events.__wrapped__
    select_notifications = PostgresApplicationRecorder.select_notifications.__wrapped__
    max_notification_id = PostgresApplicationRecorder.max_notification_id.__wrapped__


class SealedPostgresFactory(PostgresFactory):
    aggregate_recorder_class = FailFastAggregateRecorder
    application_recorder_class = SealedPostgresApplicationRecorder
