"""The application service: turns one received callback into events on one aggregate and
commits them, retrying on optimistic-concurrency conflicts. Synchronous, like the library;
the HTTP layer calls it from a thread pool."""

from __future__ import annotations

import base64
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Literal
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError
from eventsourcing.utils import get_topic

from callback_ledger.config import Settings, eventsourcing_env
from callback_ledger.domain import ids
from callback_ledger.domain.callbacks import (
    INTERPRETED_TRIGGERS,
    DeliveryCallback,
    InboundCallback,
    OptInCallback,
    OptOutCallback,
    detect_trigger,
    parse_callback,
)
from callback_ledger.domain.contact import Contact, contact_key
from callback_ledger.domain.message import Message
from callback_ledger.domain.receipt import Receipt
from callback_ledger.domain.unrecognised import QuarantinedCallback, UnrecognisedCallback

MAX_ATTEMPTS = 50


class StoreContention(RuntimeError):
    """Optimistic-concurrency retries ran out; the sender should try again later."""


@dataclass(frozen=True)
class Outcome:
    status: Literal["accepted", "duplicate"]
    trigger: str
    events: int


class Ledger(Application[UUID]):
    name = "Ledger"
    # Contacts collect every inbound message; snapshots keep their reload short.
    snapshotting_intervals: ClassVar[dict[type[Aggregate], int]] = {Contact: 200}

    @classmethod
    def from_settings(cls, settings: Settings) -> Ledger:
        return cls(env=eventsourcing_env(settings.database_url, settings.db_timeout_s))

    def accept(self, body: dict[str, Any], receipt: Receipt) -> Outcome:
        """Records a JSON callback body. Raises InvalidCallback for a known trigger with
        invalid fields; persistence errors propagate (the caller answers 503)."""
        trigger = detect_trigger(body)
        if trigger not in INTERPRETED_TRIGGERS:
            return self._keep_unrecognised(trigger, body, receipt)
        callback = parse_callback(trigger, body)
        if isinstance(callback, DeliveryCallback):
            report = callback.message_delivery_report
            return self._append(
                trigger,
                lambda: Message(project_id=callback.project_id, message_id=report.message_id),
                Message.create_id(callback.project_id, report.message_id),
                lambda m: m.record_report(callback, receipt),
            )
        if isinstance(callback, InboundCallback):
            message = callback.message
            key = contact_key(
                message.contact_id,
                message.channel_identity.channel,
                message.channel_identity.identity,
            )
            return self._append(
                trigger,
                lambda: Contact(project_id=callback.project_id, contact_key=key),
                Contact.create_id(callback.project_id, key),
                lambda c: c.record_inbound(callback, receipt),
            )
        assert isinstance(callback, OptInCallback | OptOutCallback)
        note = (
            callback.opt_in_notification
            if isinstance(callback, OptInCallback)
            else callback.opt_out_notification
        )
        key = contact_key(note.contact_id, note.channel, note.identity)
        return self._append(
            trigger,
            lambda: Contact(project_id=callback.project_id, contact_key=key),
            Contact.create_id(callback.project_id, key),
            lambda c: c.record_consent(callback, receipt),
        )

    def _append(self, trigger: str, create: Any, aggregate_id: UUID, decide: Any) -> Outcome:
        for attempt in range(MAX_ATTEMPTS):
            try:
                aggregate = self.repository.get(aggregate_id)
            except AggregateNotFoundError:
                aggregate = create()
            if not decide(aggregate):
                return Outcome("duplicate", trigger, 0)
            pending = len(aggregate.pending_events)
            try:
                self.save(aggregate)
            except IntegrityError:
                # Another writer appended to this stream first: reload and decide again, so a
                # racing duplicate becomes "duplicate" and a different report is kept too.
                time.sleep(random.uniform(0, 0.002 * (attempt + 1)))
                continue
            return Outcome("accepted", trigger, pending)
        raise StoreContention(f"gave up after {MAX_ATTEMPTS} conflicting writes to one stream")

    def _keep_unrecognised(self, trigger: str, body: dict[str, Any], receipt: Receipt) -> Outcome:
        project_id = body.get("project_id")
        aggregate = UnrecognisedCallback(
            body_hash=ids.body_hash(receipt.raw.encode()),
            trigger=trigger,
            project_id=project_id if isinstance(project_id, str) else None,
            callback=receipt.as_event_data(),
        )
        return self._save_once(aggregate, trigger)

    def quarantine(
        self, raw: bytes, trigger: str, status_code: int, problems: list[str], receipt: Receipt
    ) -> Outcome:
        """Keeps a refused body whole (base64, since it may not even be UTF-8)."""
        aggregate = QuarantinedCallback(
            body_hash=ids.body_hash(raw),
            trigger=trigger,
            status_code=status_code,
            problems=problems,
            raw_base64=base64.b64encode(raw).decode(),
            callback=receipt.as_event_data(),
        )
        return self._save_once(aggregate, trigger)

    def _save_once(self, aggregate: Aggregate, trigger: str) -> Outcome:
        pending = len(aggregate.pending_events)
        try:
            self.save(aggregate)
        except IntegrityError:
            # The id is the body's hash: the very same body is already kept.
            return Outcome("duplicate", trigger, 0)
        return Outcome("accepted", trigger, pending)

    def quarantined(self, after: int = 0, limit: int = 100) -> Iterator[dict[str, Any]]:
        """The quarantine, oldest first; `id` is the cursor for the next page."""
        topic = get_topic(QuarantinedCallback.Quarantined)
        notifications = self.recorder.select_notifications(
            start=after, limit=limit, topics=[topic], inclusive_of_start=False
        )
        for notification in notifications:
            event = self.mapper.to_domain_event(notification)
            yield {
                "id": notification.id,
                "trigger": event.trigger,
                "status_code": event.status_code,
                "problems": event.problems,
                "received_at": event.callback["received_at"],
                "signature_verified": event.callback["signature_verified"],
                "raw_base64": event.raw_base64,
            }

    def ping(self) -> int:
        """The head of the event log; raises when the store cannot be reached."""
        return self.recorder.max_notification_id() or 0
