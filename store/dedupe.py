"""The dedupe keys of the Contact streams' facts, `ledger_dedupe`: a Contact remembers only its
last keys, so an older fact's redelivery is recognised here. The recorders insert a fact's key
in its event's transaction (`save(dedupe=rows(events))`), so a key is in the table exactly when
its event is in the log, and a second copy of a fact fails the transaction on the primary key
like a stale version does. Keys are stored as UTF-8 bytes (PostgreSQL text cannot hold a NUL)."""

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
