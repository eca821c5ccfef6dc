"""The raw callback behind a consent fact or a timeline entry, read from the immutable log."""

from __future__ import annotations

from typing import Any
from uuid import UUID

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
