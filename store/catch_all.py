"""The catch-all and the quarantine: callbacks kept whole, uninterpreted (a trigger this
version does not interpret) or refused (a body that is not a valid callback), each stream one
body named by its hash; reading the quarantine back; and recording again what an earlier
version kept in the catch-all and this one interprets."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.utils import get_topic

from domain import ids
from domain.callbacks import (
    INTERPRETED_TRIGGERS,
    InvalidCallback,
    QuarantinedCallback,
    Receipt,
    UnrecognisedCallback,
    detect_trigger,
    loads_body,
)
from store.commands import Command, Outcome, created_once, exact_text

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


class CatchAll(Application[UUID]):
    """The Ledger's catch-all and quarantine (a part of store.ledger.Ledger)."""

    def execute(self, command: Command) -> Outcome:
        raise NotImplementedError  # the Ledger's

    def command_for(self, body: dict[str, Any], receipt: Receipt) -> Command | None:
        raise NotImplementedError  # the Ledger's

    def unrecognised_command(self, body: dict[str, Any], receipt: Receipt) -> Command:
        return unrecognised_command(body, receipt)

    def quarantine_command(
        self, raw: bytes, trigger: str, status_code: int, problems: list[str], receipt: Receipt
    ) -> Command:
        return quarantine_command(raw, trigger, status_code, problems, receipt)

    def reinterpret_kept(self, page: int = 500) -> dict[str, int]:
        """Records the callbacks an earlier version kept in the catch-all whose trigger this
        version interprets (MESSAGE_SUBMIT), each with its original receipt (raw body, arrival
        time, signature check, headers), on the stream it belongs to. Appends only; what is
        already recorded is a duplicate, so running it again changes nothing. Reads the whole
        log once (the catch-all's events are found by topic). Counts by outcome."""
        counts = {"accepted": 0, "duplicate": 0, "not_interpretable": 0}
        after = 0
        while True:
            notifications = self.recorder.select_notifications(
                start=after, limit=page, topics=[CATCH_ALL_TOPIC], inclusive_of_start=False
            )
            if not notifications:
                return counts
            after = notifications[-1].id
            for notification in notifications:
                kept: Any = self.mapper.to_domain_event(notification)
                if kept.trigger not in INTERPRETED_TRIGGERS:
                    continue
                received = kept.callback
                if received.get("raw") is None:  # erased, or kept as base64 (not JSON)
                    counts["not_interpretable"] += 1
                    continue
                receipt = Receipt(
                    received["raw"],
                    datetime.fromisoformat(received["received_at"]),
                    received["signature_verified"],
                    received.get("headers") or {},
                )
                try:
                    command = self.command_for(loads_body(receipt.raw.encode()), receipt)
                except (InvalidCallback, ValueError):
                    command = None
                if command is None:  # still not fit to interpret: it stays where it is
                    counts["not_interpretable"] += 1
                    continue
                counts[self.execute(command).status] += 1
