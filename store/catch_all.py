"""The catch-all and the quarantine's commands: callbacks kept whole, uninterpreted (a trigger
this version does not interpret) or refused (not a valid callback), one stream per body named
by its hash."""

from __future__ import annotations

import base64
from typing import Any

from eventsourcing.utils import get_topic

from domain import ids
from domain.callbacks import detect_trigger
from domain.receipt import Receipt
from domain.unrecognised import QuarantinedCallback, UnrecognisedCallback
from store.commands import Command, created_once, exact_text

# A catch-all stream holds one event: its reference is `<stream>/received`.
CATCH_ALL_KEY = "received"
CATCH_ALL_TOPIC = get_topic(UnrecognisedCallback.Received)  # type: ignore[attr-defined]


def unrecognised_command(body: dict[str, Any], receipt: Receipt) -> Command:
    """The catch-all's recording: one stream per distinct body (its hash). Pure."""
    trigger = detect_trigger(body)
    project_id, app_id, event_time = (body.get(k) for k in ("project_id", "app_id", "event_time"))
    body_hash = ids.body_hash(receipt.raw.encode())
    return created_once(
        trigger,
        UnrecognisedCallback.create_id(body_hash),
        lambda: UnrecognisedCallback(
            body_hash=body_hash,
            trigger=trigger,
            project_id=project_id if isinstance(project_id, str) else None,
            callback=receipt.as_event_data(),
            app_id=app_id if isinstance(app_id, str) else None,
            event_time=event_time if isinstance(event_time, str) else None,
        ),
        CATCH_ALL_KEY,
    )


def quarantine_command(
    raw: bytes, trigger: str, status_code: int, problems: list[str], receipt: Receipt
) -> Command:
    """Keeps a refused body whole, once (see QuarantinedCallback). Pure."""
    body_hash = ids.body_hash(raw)
    raw_base64: str | None = None
    callback = receipt.as_event_data()
    if not exact_text(raw, receipt.raw):
        raw_base64, callback["raw"] = base64.b64encode(raw).decode(), None
    return created_once(
        trigger,
        QuarantinedCallback.create_id(body_hash),
        lambda: QuarantinedCallback(
            body_hash=body_hash,
            trigger=trigger,
            status_code=status_code,
            problems=problems,
            raw_base64=raw_base64,
            callback=callback,
        ),
    )
