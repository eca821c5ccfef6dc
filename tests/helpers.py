"""Reading back what the store holds, through a Ledger of its own (a second reader proves
the events were committed, not merely cached)."""

from __future__ import annotations

from typing import Any

from callback_ledger.config import Settings
from callback_ledger.ledger import Ledger


def stored_events(database_url: str) -> list[Any]:
    ledger = Ledger.from_settings(Settings(database_url=database_url))
    try:
        notifications = ledger.recorder.select_notifications(start=1, limit=1_000_000)
        return [ledger.mapper.to_domain_event(n) for n in notifications]
    finally:
        ledger.close()


def names(events: list[Any]) -> list[str]:
    return [type(e).__qualname__ for e in events]
