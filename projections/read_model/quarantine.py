"""The quarantine: refused callback bodies kept whole for an operator, read from the log."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator
from typing import Any

from eventsourcing.utils import get_topic

from domain.callbacks import QuarantinedCallback
from store.ledger import Ledger

QUARANTINED = get_topic(QuarantinedCallback.Quarantined)  # type: ignore[attr-defined]


def quarantined(
    ledger: Ledger, after: int = 0, limit: int = 100, page: int = 8
) -> Iterator[dict[str, Any]]:
    """The quarantine, oldest first; `id` is the cursor for the next page. Read `page` entries
    at a time, so a caller holds at most that many bodies however large `limit`."""
    while limit > 0:
        notifications = ledger.recorder.select_notifications(
            start=after, limit=min(page, limit), topics=[QUARANTINED], inclusive_of_start=False
        )
        if not notifications:
            return
        limit -= len(notifications)
        after = notifications[-1].id
        yield from _items(ledger, notifications)


def _items(ledger: Ledger, notifications: Iterable[Any]) -> Iterator[dict[str, Any]]:
    for notification in notifications:
        event: Any = ledger.mapper.to_domain_event(notification)
        raw = event.callback.get("raw")
        item = {
            "id": notification.id,
            "trigger": event.trigger,
            "status_code": event.status_code,
            "problems": event.problems,
            "received_at": event.callback["received_at"],
            "signature_verified": event.callback["signature_verified"],
            "raw_base64": event.raw_base64
            or (base64.b64encode(raw.encode()).decode() if raw is not None else None),
        }
        if event.callback.get("erased"):  # its data key was destroyed (retention)
            item["erased"] = True
        yield item
