"""PostgreSQL persistence that fails fast.

The library retries every failed read and write ten times, each waiting up to the pool
timeout: during a database outage one webhook request would hang for ten timeouts. We answer
503 after one, and the sender (Sinch retries on 5xx) tries again later. Pre-ping on the pool
still replaces connections broken by a database restart."""

from __future__ import annotations

from eventsourcing.postgres import (
    PostgresAggregateRecorder,
    PostgresApplicationRecorder,
    PostgresFactory,
)


class FailFastAggregateRecorder(PostgresAggregateRecorder):
    insert_events = PostgresAggregateRecorder.insert_events.__wrapped__  # type: ignore[attr-defined]
    select_events = PostgresAggregateRecorder.select_events.__wrapped__  # type: ignore[attr-defined]


class FailFastApplicationRecorder(PostgresApplicationRecorder):
    insert_events = PostgresApplicationRecorder.insert_events.__wrapped__  # type: ignore[attr-defined]
    select_events = PostgresAggregateRecorder.select_events.__wrapped__  # type: ignore[attr-defined]
    select_notifications = PostgresApplicationRecorder.select_notifications.__wrapped__  # type: ignore[attr-defined]
    max_notification_id = PostgresApplicationRecorder.max_notification_id.__wrapped__  # type: ignore[attr-defined]


class FailFastPostgresFactory(PostgresFactory):
    aggregate_recorder_class = FailFastAggregateRecorder
    application_recorder_class = FailFastApplicationRecorder
