"""The callbacks projection: one row per stored callback, interpreted or kept in the catch-all,
listed by trigger and arrival time. A row names its callback by reference and holds no
personal data: the body stays in the log, behind the audited read by reference."""

from __future__ import annotations

from typing import Any

from domain.message import report_key, submission_key
from projections.log_reader import (
    CONSENT_REPORTED,
    CONTACT_DELETED,
    CONTACT_MERGED,
    INBOUND_RECEIVED,
    MESSAGE_SUBMITTED,
    REPORTS,
    UNRECOGNISED_RECEIVED,
    LoggedEvent,
)
from projections.rules import iso, stored_time
from store.backend import Cursor
from store.commands import CATCH_ALL_KEY

NAME = "callbacks"
TOPICS = frozenset(
    {
        *REPORTS,
        MESSAGE_SUBMITTED,
        CONSENT_REPORTED,
        INBOUND_RECEIVED,
        CONTACT_MERGED,
        CONTACT_DELETED,
        UNRECOGNISED_RECEIVED,
    }
)
TABLES = ("callbacks",)
COLUMNS = (
    "reference",
    "trigger",
    "received_at",
    "event_time",
    "project_id",
    "app_id",
    "interpreted",
)
# The lists' order: by arrival, the reference breaking ties (the keyset cursor).
BY_ARRIVAL = ("received_at", "reference")
BY_TRIGGER = ("trigger", *BY_ARRIVAL)


def schema(g: int) -> list[str]:
    return [
        f"""CREATE TABLE callbacks_g{g} (
            reference TEXT NOT NULL PRIMARY KEY, trigger TEXT NOT NULL,
            received_at TEXT NOT NULL, event_time TEXT, project_id TEXT, app_id TEXT,
            interpreted INTEGER NOT NULL)""",
        f"CREATE INDEX ix_cb_g{g}_trigger ON callbacks_g{g} ({', '.join(BY_TRIGGER)})",
        f"CREATE INDEX ix_cb_g{g}_arrival ON callbacks_g{g} ({', '.join(BY_ARRIVAL)})",
    ]


def apply(cur: Cursor, g: int, events: list[LoggedEvent]) -> None:
    # A merge is one callback recorded on both contacts: listed once, by the preserved one's.
    rows = [
        row(event)
        for event in events
        if not (event.topic == CONTACT_MERGED and event.state.get("role") == "deleted")
    ]
    if rows:
        cur.executemany(
            f"INSERT INTO callbacks_g{g} ({', '.join(COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(COLUMNS))}) ON CONFLICT (reference) DO NOTHING",
            rows,
        )


def row(event: LoggedEvent) -> tuple[Any, ...]:
    state = event.state
    stream = event.originator_id
    interpreted = event.topic != UNRECOGNISED_RECEIVED
    app_id = state.get("app_id")
    event_time = stored_time(state.get("event_time"))
    if event.topic in REPORTS:
        trigger, key = "MESSAGE_DELIVERY", report_key(state.get("channel"), state["status"])
    elif event.topic == MESSAGE_SUBMITTED:
        trigger, key = "MESSAGE_SUBMIT", submission_key(state.get("channel"))
    elif event.topic == CONSENT_REPORTED:
        trigger, key = str(state["kind"]), str(state["dedupe_key"])
    elif event.topic == INBOUND_RECEIVED:
        trigger, key = "MESSAGE_INBOUND", str(state["dedupe_key"])
    elif event.topic == CONTACT_MERGED:
        trigger, key = "CONTACT_MERGE", str(state["dedupe_key"])
    elif event.topic == CONTACT_DELETED:
        trigger, key = "CONTACT_DELETE", str(state["dedupe_key"])
    else:
        trigger, key = str(state["trigger"]), CATCH_ALL_KEY
        event_time = _sent_time(state.get("event_time"))
    project_id = state.get("project_id")
    return (
        f"{stream}/{key}",
        trigger,
        iso(state["callback"]["received_at"]),
        event_time,
        project_id if isinstance(project_id, str) else None,
        app_id if isinstance(app_id, str) else None,
        1 if interpreted else 0,
    )


def _sent_time(value: Any) -> str | None:
    """A kept body's event time, as the list holds times, when it reads as one."""
    try:
        return stored_time(value)
    except (ValueError, OverflowError):  # the sender's text: not always a time
        return None
