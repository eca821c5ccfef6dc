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

The recorders that write it: SQLite's in store.sqlite_recorder (set through the library's
APPLICATION_RECORDER_TOPIC, store.sqlite), PostgreSQL's
`postgres.FailFastApplicationRecorder`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from uuid import UUID

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
