"""PostgreSQL persistence that fails fast.

The library retries every failed read and write ten times, each waiting up to the pool
timeout: during a database outage one webhook request would hang for ten timeouts. We answer
503 after one, and the sender (Sinch retries on 5xx) tries again later. A connection broken by
a database restart fails one request and is replaced by the pool."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import (
    PostgresAggregateRecorder,
    PostgresApplicationRecorder,
    PostgresFactory,
)
from psycopg.sql import SQL, Identifier


class FailFastAggregateRecorder(PostgresAggregateRecorder):
    insert_events = PostgresAggregateRecorder.insert_events.__wrapped__  # type: ignore[attr-defined]
    select_events = PostgresAggregateRecorder.select_events.__wrapped__  # type: ignore[attr-defined]


class FailFastApplicationRecorder(PostgresApplicationRecorder):
    """Also inserts with COPY. The library builds a composite-type array per save, which costs
    more CPU than the rest of a callback's handling; COPY writes the same rows in one round
    trip. The insert still runs under the library's EXCLUSIVE table lock, so notification ids
    become visible in order and followers never skip an event. Notification ids are not
    returned: nothing here uses them (the projector reads the log itself)."""

    def insert_events(self, stored_events: Sequence[StoredEvent], **_: Any) -> None:
        if not stored_events:
            return None
        lock = "; ".join(s.as_string() for s in self.lock_table_statements)
        copy = SQL("COPY {0}.{1} (originator_id, originator_version, topic, state) FROM STDIN")
        with (
            self.datastore.get_connection() as conn,
            conn.transaction(),
            conn.cursor() as cursor,
        ):
            cursor.execute(lock)
            with cursor.copy(
                copy.format(Identifier(self.datastore.schema), Identifier(self.events_table_name))
            ) as rows:
                for event in stored_events:
                    rows.write_row(
                        (event.originator_id, event.originator_version, event.topic, event.state)
                    )
        return None

    select_events = PostgresAggregateRecorder.select_events.__wrapped__  # type: ignore[attr-defined]
    select_notifications = PostgresApplicationRecorder.select_notifications.__wrapped__  # type: ignore[attr-defined]
    max_notification_id = PostgresApplicationRecorder.max_notification_id.__wrapped__  # type: ignore[attr-defined]


class FailFastPostgresFactory(PostgresFactory):
    aggregate_recorder_class = FailFastAggregateRecorder
    application_recorder_class = FailFastApplicationRecorder
