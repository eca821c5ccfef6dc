"""The Contact aggregate: one stream per (project_id, contact), holding the consent facts the
provider reported (OPT_IN / OPT_OUT notifications) and the inbound messages (where SMS "STOP"
arrives). Keywords are not interpreted here: projections read them, so a changed keyword list
can be replayed over the same facts."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from . import ids
from .callbacks import InboundCallback, OptInCallback, OptOutCallback, normalise_identity
from .receipt import Receipt


def contact_key(contact_id: str | None, channel: str, identity: str | None) -> str:
    """Sinch names the contact; in DISPATCH mode it may not, and the channel identity is then
    the only stable name we have. The callback models refuse a body that names neither."""
    if contact_id:
        return contact_id
    if not identity:
        raise ValueError("a contact needs a contact_id or a channel identity")
    return f"~{channel}:{normalise_identity(identity)}"


def consent_key(
    kind: str, callback: OptInCallback | OptOutCallback, note: Any, receipt: Receipt
) -> str:
    """What names one consent notification: its request_id; without one, who, what and when.
    When is the provider's event_time, else its accepted_time, else (neither given) the body
    itself, so two different notifications are never taken for one."""
    if note.request_id:
        return f"{kind}|request|{note.request_id}"
    if callback.event_time:
        when = callback.event_time.isoformat()
    elif callback.accepted_time:
        when = "accepted:" + callback.accepted_time.isoformat()
    else:
        when = "body:" + ids.body_hash(receipt.raw.encode())
    identity = normalise_identity(note.identity) if note.identity else ""
    return f"{kind}|{note.channel}|{identity}|{note.status}|{when}"


class Contact(Aggregate):
    @staticmethod
    def create_id(project_id: str, contact_key: str) -> UUID:
        return ids.contact_id(project_id, contact_key)

    @event("Registered")
    def __init__(self, project_id: str, contact_key: str) -> None:
        self.project_id = project_id
        self.contact_key = contact_key
        self.seen: dict[str, int] = {}

    class ConsentReported(Aggregate.Event):
        """An OPT_IN or OPT_OUT notification, succeeded or failed."""

        project_id: str
        contact_key: str
        kind: str
        status: str
        channel: str
        identity: str | None
        request_id: str | None
        error_details: dict[str, Any] | None
        event_time: datetime | None
        accepted_time: datetime | None
        contact_id: str | None
        processing_mode: str | None
        app_id: str | None
        dedupe_key: str
        callback: dict[str, Any]

    class InboundMessageReceived(Aggregate.Event):
        project_id: str
        contact_key: str
        message_id: str | None
        channel: str
        identity: str
        kind: str
        text: str | None
        accept_time: datetime | None
        event_time: datetime | None
        accepted_time: datetime | None
        conversation_id: str | None
        contact_id: str | None
        processing_mode: str | None
        app_id: str | None
        dedupe_key: str
        callback: dict[str, Any]

    def record_consent(self, callback: OptInCallback | OptOutCallback, receipt: Receipt) -> bool:
        """Appends a ConsentReported event; False when this notification is already recorded."""
        if isinstance(callback, OptInCallback):
            kind, note = "OPT_IN", callback.opt_in_notification
        else:
            kind, note = "OPT_OUT", callback.opt_out_notification
        key = consent_key(kind, callback, note, receipt)
        if key in self.seen:
            return False
        self.trigger_event(
            self.ConsentReported,
            project_id=self.project_id,
            contact_key=self.contact_key,
            kind=kind,
            status=note.status,
            channel=note.channel,
            identity=note.identity,
            request_id=note.request_id,
            error_details=note.error_details.model_dump() if note.error_details else None,
            event_time=callback.event_time,
            accepted_time=callback.accepted_time,
            contact_id=note.contact_id,
            processing_mode=note.processing_mode,
            app_id=callback.app_id,
            dedupe_key=key,
            callback=receipt.as_event_data(),
        )
        return True

    def record_inbound(self, callback: InboundCallback, receipt: Receipt) -> bool:
        """Appends an InboundMessageReceived event; False when this message is already recorded."""
        message = callback.message
        # Without an id, the body's hash: a redelivery is byte-identical.
        key = f"INBOUND|{message.id or 'body:' + ids.body_hash(receipt.raw.encode())}"
        if key in self.seen:
            return False
        self.trigger_event(
            self.InboundMessageReceived,
            project_id=self.project_id,
            contact_key=self.contact_key,
            message_id=message.id,
            channel=message.channel_identity.channel,
            identity=message.channel_identity.identity,
            kind=message.kind,
            text=message.text,
            accept_time=message.accept_time,
            event_time=callback.event_time,
            accepted_time=callback.accepted_time,
            conversation_id=message.conversation_id,
            contact_id=message.contact_id,
            processing_mode=message.processing_mode,
            app_id=callback.app_id,
            dedupe_key=key,
            callback=receipt.as_event_data(),
        )
        return True

    @event(ConsentReported)
    def _apply_consent(self, dedupe_key: str, **_: Any) -> None:
        self.seen[dedupe_key] = self.version

    @event(InboundMessageReceived)
    def _apply_inbound(self, dedupe_key: str, **_: Any) -> None:
        self.seen[dedupe_key] = self.version
