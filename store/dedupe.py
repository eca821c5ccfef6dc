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
(PostgreSQL text cannot hold a NUL). The table is created, and filled from the events already
in the log, in one transaction the first time a process of this version opens the store; a
store whose table exists is complete. (Stop the processes of an older version before starting
this one: they would append facts without keys.)

The recorders that write it: SQLite's in store.seal_sqlite (set through the library's
APPLICATION_RECORDER_TOPIC, store.sqlite_backend), PostgreSQL's
`postgres.FailFastApplicationRecorder`."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic

from domain.contact import Contact
from store import envelope, spellings
from store.compression import inflate, state_compressor

TABLE = "ledger_dedupe"
FACT_EVENTS = (
    Contact.ConsentReported,
    Contact.InboundMessageReceived,
    Contact.Merged,
    Contact.Deleted,
)
# Their topics as the log may hold them (store.spellings): what the table is filled from.
FACT_TOPICS = tuple(spellings.spellings(get_topic(cls) for cls in FACT_EVENTS))

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


def stored_rows(stored: Iterable[tuple[Any, int, bytes]]) -> Iterator[Row]:
    """Key rows of stored fact events (originator_id, version, state), for filling the table
    from a log written before it existed. The state is the library's JSON, compressed or not
    (no cipher is configured here); only its top-level `dedupe_key`, a plain string, is read."""
    for originator_id, version, state in stored:
        state = bytes(state)
        public = (
            envelope.public_json(state, state_compressor())
            if envelope.is_sealed(state)
            else inflate(state)
        )
        key = json.loads(public)["dedupe_key"]
        stream = originator_id if isinstance(originator_id, UUID) else UUID(originator_id)
        yield stream, key_bytes(key), version
