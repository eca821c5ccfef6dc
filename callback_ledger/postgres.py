"""PostgreSQL persistence that fails fast.

The library retries every failed read and write ten times, each waiting up to the pool
timeout: during a database outage one webhook request would hang for ten timeouts. We answer
503 after one, and the sender (Sinch retries on 5xx) tries again later. A connection broken by
a database restart fails one request and is replaced by the pool."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import (
    PostgresAggregateRecorder,
    PostgresApplicationRecorder,
    PostgresFactory,
)
from psycopg.sql import SQL, Composed, Identifier, Literal

from callback_ledger.event_keys import KEY_INDEX, KEYED_TOPICS

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
                for statement in self.after_create_table():
                    conn.execute(statement)
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (CREATE_TABLES_LOCK,))

    def after_create_table(self) -> list[Composed]:
        return []


class FailFastAggregateRecorder(CreatesTablesOneAtATime):
    insert_events = PostgresAggregateRecorder.insert_events.__wrapped__  # type: ignore[attr-defined]
    select_events = PostgresAggregateRecorder.select_events.__wrapped__  # type: ignore[attr-defined]


COPY_TYPES = ["uuid", "int8", "text", "bytea"]


def copy_row(event: StoredEvent) -> tuple[Any, ...]:
    return (event.originator_id, event.originator_version, event.topic, event.state)


class FailFastApplicationRecorder(CreatesTablesOneAtATime, PostgresApplicationRecorder):
    """Also inserts with a binary COPY, in four round trips instead of the library's six or
    more: the library builds a composite-type array per save, which costs more CPU than the
    rest of a callback's handling. The insert still runs under the library's EXCLUSIVE table
    lock, so notification ids become visible in order and followers never skip an event.
    Notification ids are not returned: nothing here uses them (the projector reads the log
    itself)."""

    def after_create_table(self) -> list[Composed]:
        """The index that finds a contact's event by its dedupe key (`Ledger.keyed_version`).
        convert_from is only STABLE (it depends on the database encoding), and an index needs
        an IMMUTABLE expression: our states are always UTF-8 JSON, so the wrapper is. The key
        is read as its JSON text, escapes and all, by a pattern, not by a JSON parser: PostgreSQL
        refuses to parse a \\u0000 anywhere in the event (its text cannot hold one), and the
        insert must never fail for it. The events' top-level `"dedupe_key":` is the only match:
        inside a string its quotes would be escaped."""
        schema = Identifier(self.datastore.schema)
        table = SQL("{0}.{1}").format(schema, Identifier(self.events_table_name))
        topics = SQL(", ").join(Literal(t) for t in KEYED_TOPICS)
        return [
            SQL(
                "CREATE OR REPLACE FUNCTION {0}.ledger_event_key(state bytea) RETURNS text "
                "LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE "
                "AS $$ SELECT substring(convert_from(state, 'UTF8') "
                'FROM \'"dedupe_key":("(?:[^"\\\\]|\\\\.)*")\') $$'
            ).format(schema),
            SQL(
                "CREATE INDEX IF NOT EXISTS {0} ON {1} "
                "(originator_id, {2}.ledger_event_key(state)) WHERE topic IN ({3})"
            ).format(Identifier(KEY_INDEX), table, schema, topics),
        ]

    def keyed_version_query(self) -> Composed:
        schema = Identifier(self.datastore.schema)
        return SQL(
            "SELECT originator_version FROM {0}.{1} WHERE originator_id = %s "
            "AND {0}.ledger_event_key(state) = %s AND topic IN ({2}) LIMIT 1"
        ).format(
            schema,
            Identifier(self.events_table_name),
            SQL(", ").join(Literal(t) for t in KEYED_TOPICS),
        )

    def insert_statements(self) -> tuple[Composed, Composed]:
        """BEGIN with the lock statements as one simple query (no parameters, so several
        statements go in one round trip), and the binary COPY of COPY_TYPES rows."""
        table = SQL("{0}.{1}").format(
            Identifier(self.datastore.schema), Identifier(self.events_table_name)
        )
        begin = SQL("; ").join([SQL("BEGIN"), *self.lock_table_statements])
        copy = SQL(
            "COPY {0} (originator_id, originator_version, topic, state) FROM STDIN (FORMAT BINARY)"
        ).format(table)
        return begin, copy

    def insert_events(self, stored_events: Sequence[StoredEvent], **_: Any) -> None:
        if not stored_events:
            return None
        begin, copy = self.insert_statements()
        with self.datastore.get_connection() as conn, conn.cursor() as cursor:
            try:
                cursor.execute(begin)
                with cursor.copy(copy) as rows:
                    rows.set_types(COPY_TYPES)
                    for event in stored_events:
                        rows.write_row(copy_row(event))
                cursor.execute("COMMIT")
            except BaseException:
                if not conn.closed:
                    with contextlib.suppress(Exception):
                        cursor.execute("ROLLBACK")
                raise
        return None

    select_events = PostgresAggregateRecorder.select_events.__wrapped__  # type: ignore[attr-defined]
    select_notifications = PostgresApplicationRecorder.select_notifications.__wrapped__  # type: ignore[attr-defined]
    max_notification_id = PostgresApplicationRecorder.max_notification_id.__wrapped__  # type: ignore[attr-defined]


class FailFastPostgresFactory(PostgresFactory):
    aggregate_recorder_class = FailFastAggregateRecorder
    application_recorder_class = FailFastApplicationRecorder
