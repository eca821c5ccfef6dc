"""A small story for the console's tests and screenshots: one message whose reports arrive out
of order to a number that had opted out on that channel (a violation), a failed message, hostile
text in metadata, and quarantined bodies (one this version accepts, one it still refuses)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from domain.callbacks import Receipt
from store.ledger import Ledger
from tests import payloads as p

NUMBER = "46732001122"
NUMBER_AS_TYPED = "+46 73-200 11 22"  # another format than stored
HOSTILE = "<script>alert('x')</script>"
SINCE = "2024-06-15T00:00:00Z"
UNTIL = "2024-06-16T00:00:00Z"


def story() -> list[dict[str, Any]]:
    """In arrival order: DELIVERED before the QUEUED report that precedes it in event time."""
    return [
        p.opt("OPT_OUT", channel="WHATSAPP", identity=NUMBER, event_time="2024-06-15T09:00:00Z"),
        p.delivery("MSG-1", "DELIVERED", event_time="2024-06-15T10:00:05Z", metadata="order-777"),
        p.delivery(
            "MSG-1", "QUEUED_ON_CHANNEL", event_time="2024-06-15T10:00:01Z", metadata="order-777"
        ),
        p.delivery("MSG-1", "READ", event_time="2024-06-15T10:00:09Z", metadata="order-777"),
        p.delivery(
            "MSG-2",
            "FAILED",
            channel="SMS",
            event_time="2024-06-15T11:00:00Z",
            metadata=HOSTILE,
            reason={"code": "RECIPIENT_NOT_REACHABLE", "description": HOSTILE},
        ),
    ]


# A delivery report an earlier version refused (kept in the quarantine): this one accepts it.
ACCEPTABLE = p.delivery(
    "MSG-3", "DELIVERED", identity="46700000003", event_time="2024-06-15T12:00:00Z"
)
REFUSED = b'{"not a callback": ' + HOSTILE.encode() + b"}"


def quarantine_acceptable(ledger: Ledger) -> None:
    raw = orjson.dumps(ACCEPTABLE)
    receipt = Receipt(raw.decode(), datetime(2024, 6, 15, 12, 0, 3, tzinfo=UTC), True, {})
    ledger.execute(
        ledger.quarantine_command(
            raw, "MESSAGE_DELIVERY", 422, ["refused by an earlier version"], receipt
        )
    )
