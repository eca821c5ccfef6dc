"""The raw callback behind a reference, read from the log; and the list of stored callbacks by
trigger and arrival (projections.callbacks), without bodies."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote
from uuid import UUID

from projections.callbacks import BY_ARRIVAL
from projections.read_model.paging import Conditions, KeysetPage, keyset_page
from store.backend import Cursor, Row, time_window
from store.ledger import Ledger


def callback(ledger: Ledger, reference: str) -> dict[str, Any] | None:
    """The raw callback behind a `source_ref` / timeline `reference`: `<stream id>/<key>`."""
    stream, _, key = reference.partition("/")
    try:
        originator_id = UUID(stream)
    except ValueError:
        return None
    event = ledger.keyed_event(originator_id, key)
    if event is None:
        return None
    received = event.callback
    found = {
        "reference": reference,
        "event": type(event).__qualname__,
        "stream": str(originator_id),
        "version": event.originator_version,
        "raw": received["raw"],
        "received_at": received["received_at"],
        "signature_verified": received["signature_verified"],
        "headers": received["headers"],
    }
    if received.get("erased"):  # its data key was destroyed: the body is unreadable
        found["erased"] = True
    return found


def listed(
    cur: Cursor,
    trigger: str | None,
    since: str | None,
    until: str | None,
    after: Sequence[str] | None,
    limit: int,
) -> KeysetPage:
    """A page of the stored callbacks (of `trigger`, if given) that arrived in `since <= t <
    until`, oldest first; `after`: the previous page's `next_key`."""
    conditions: Conditions = [("trigger = ?", trigger)] if trigger is not None else []
    conditions += time_window("received_at", since, until)
    return keyset_page(cur, "callbacks", BY_ARRIVAL, conditions, after, limit, listed_item)


def listed_item(row: Row) -> dict[str, Any]:
    return {
        "reference": row["reference"],
        "trigger": row["trigger"],
        "received_at": row["received_at"],
        "event_time": row["event_time"],
        "project_id": row["project_id"],
        "app_id": row["app_id"],
        "interpreted": bool(row["interpreted"]),
        # The body, behind the audited read by reference.
        "callback_url": f"/callbacks/{quote(row['reference'], safe='/')}",
    }
