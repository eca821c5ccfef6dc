"""Reading the quarantine, and resolving its entries (re-ingested or reviewed) by a `Resolved`
event on the entry's own stream; nothing is deleted."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic

from domain.callbacks import QuarantinedCallback, Receipt
from store.commands import Command
from store.ledger import Ledger

QUARANTINED_TOPIC = get_topic(QuarantinedCallback.Quarantined)  # type: ignore[attr-defined]
RESOLVED_TOPIC = get_topic(QuarantinedCallback.Resolved)  # type: ignore[attr-defined]
REINGESTED, REVIEWED = "reingested", "reviewed"
RESOLVE_TRIGGER = "QUARANTINE_RESOLVED"
MAX_NOTE = 2000
RESOLUTION_FIELDS = ("outcome", "by", "at", "note", "result")


@dataclass
class Entry:
    """One quarantined body, by its position in the log (`id`)."""

    id: int
    stream: UUID
    trigger: str
    status_code: int
    problems: list[str]
    received_at: str
    signature_verified: bool
    raw: bytes
    headers: dict[str, str] = field(default_factory=dict)
    resolution: dict[str, Any] | None = None
    # Its body's key was destroyed: nothing to show or feed back.
    erased: bool = False

    @property
    def text(self) -> str:
        return self.raw.decode("utf-8", errors="replace")

    def receipt(self) -> Receipt:
        return Receipt(
            self.text,
            datetime.fromisoformat(self.received_at),
            self.signature_verified,
            dict(self.headers),
        )


def _entry(ledger: Ledger, notification: Any) -> Entry:
    event: Any = ledger.mapper.to_domain_event(notification)
    callback = event.callback
    erased = bool(getattr(event, "erased", False))
    if event.raw_base64:
        raw = base64.b64decode(event.raw_base64)
    else:
        raw = b"" if callback.get("raw") is None else str(callback["raw"]).encode("utf-8")
    return Entry(
        id=notification.id,
        stream=event.originator_id,
        trigger=event.trigger,
        status_code=event.status_code,
        problems=list(event.problems or []),
        received_at=callback["received_at"],
        signature_verified=bool(callback["signature_verified"]),
        raw=raw,
        headers=dict(callback.get("headers") or {}),
        resolution=resolution(ledger, event.originator_id),
        erased=erased,
    )


def resolution(ledger: Ledger, stream: UUID) -> dict[str, Any] | None:
    """The entry's resolution: its stream's second event, if any."""
    for stored in ledger.recorder.select_events(stream, gt=1, limit=1):
        if stored.topic == RESOLVED_TOPIC:
            done: Any = ledger.mapper.to_domain_event(stored)
            return {name: getattr(done, name) for name in RESOLUTION_FIELDS}
    return None


def entries(ledger: Ledger, after: int = 0, limit: int = 50) -> Iterator[Entry]:
    """The quarantine, oldest first, after log position `after`."""
    notifications = ledger.recorder.select_notifications(
        start=after, limit=limit, topics=[QUARANTINED_TOPIC], inclusive_of_start=False
    )
    for notification in notifications:
        yield _entry(ledger, notification)


def entry(ledger: Ledger, entry_id: int) -> Entry | None:
    """The entry at log position `entry_id`, or None."""
    found = ledger.recorder.select_notifications(
        start=entry_id, limit=1, topics=[QUARANTINED_TOPIC], inclusive_of_start=True
    )
    if not found or found[0].id != entry_id:
        return None
    return _entry(ledger, found[0])


def resolve_command(
    stream: UUID, outcome: str, by: str, at: str, note: str, result: str | None = None
) -> Command:
    """Appends the resolution to the entry's stream; a duplicate if it is resolved already."""

    def missing() -> Any:
        raise LookupError(f"no quarantine entry has the stream {stream}")

    return Command(
        RESOLVE_TRIGGER,
        stream,
        missing,
        lambda kept: kept.resolve(outcome, by, at, note[:MAX_NOTE], result),
    )
