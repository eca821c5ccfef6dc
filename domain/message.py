"""The Message aggregate: one stream per (project_id, message_id), one event per distinct
delivery report. It decides idempotency; it does not rank statuses (projections do, so the
log stays a plain record of what the provider said)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain import ids
from domain.callbacks import DeliveryCallback, Receipt, SubmitCallback
from domain.ids import stored


def report_key(channel: str | None, status: str) -> str:
    # Sinch may send the same report twice (retries, several webhooks); a channel reports a
    # given status at most once, so (channel, status) names a report within a message.
    return f"{channel or ''}|{status}"


def submission_key(channel: str | None) -> str:
    # "submit:" cannot be the start of report_key's "channel|STATUS" for any channel we take.
    return f"submit:{channel or ''}"


class Message(Aggregate):
    TOPIC = stored("message", "Message")

    # With an explicit topic on the aggregate, every event class needs one, even this base.
    class Created(Aggregate.Created):
        TOPIC = stored("message", "Message.Created")

    @staticmethod
    def create_id(project_id: str, message_id: str) -> UUID:
        return ids.message_id(project_id, message_id)

    @classmethod
    def register(cls, stream: UUID, project_id: str, message_id: str) -> Message:
        """A new message on a stream its store named (ids.message_id)."""
        registered = cls.Registered  # type: ignore[attr-defined]
        return cls._create(registered, id=stream, project_id=project_id, message_id=message_id)

    @event("Registered", topic=stored("message", "Message.Registered"))
    def __init__(self, project_id: str, message_id: str) -> None:
        self.project_id = project_id
        self.message_id = message_id
        self.report_keys: dict[str, int] = {}

    class _Report(Aggregate.Event):
        """The fields of a delivery report's event; the stream's names are repeated on each
        event so every event reads on its own. Never stored itself."""

        TOPIC = stored("message", "Message._Report")
        project_id: str
        message_id: str
        status: str
        channel: str | None
        identity: str | None
        event_time: datetime | None
        accepted_time: datetime | None
        reason: dict[str, Any] | None
        conversation_id: str | None
        contact_id: str | None
        metadata: str | None
        processing_mode: str | None
        app_id: str | None
        callback: dict[str, Any]

    class DeliveryReported(_Report):
        TOPIC = stored("message", "Message.DeliveryReported")

    class FirstReported(_Report, Aggregate.Created):
        """A message's registration and its first report as one event (one row in the log);
        streams that hold Registered, then DeliveryReported, load and replay alike."""

        TOPIC = stored("message", "Message.FirstReported")

        def apply(self, aggregate: Any) -> None:
            aggregate.report_keys[report_key(self.channel, self.status)] = self.originator_version

    class Submitted(Aggregate.Event):
        """MESSAGE_SUBMIT: the message was handed to a channel (before any delivery report)."""

        TOPIC = stored("message", "Message.Submitted")

        project_id: str
        message_id: str
        channel: str | None
        identity: str | None
        event_time: datetime | None
        accepted_time: datetime | None
        conversation_id: str | None
        contact_id: str | None
        metadata: str | None
        processing_mode: str | None
        app_id: str | None
        callback: dict[str, Any]

    def record_submission(self, callback: SubmitCallback, receipt: Receipt) -> bool:
        """Appends a Submitted event; False when this channel's submission is recorded."""
        note = callback.message_submit_notification
        channel = note.channel_identity.channel if note.channel_identity else None
        if submission_key(channel) in self.report_keys:
            return False
        self.trigger_event(
            self.Submitted,
            project_id=self.project_id,
            message_id=self.message_id,
            channel=channel,
            identity=note.channel_identity.identity if note.channel_identity else None,
            event_time=callback.event_time,
            accepted_time=callback.accepted_time,
            conversation_id=note.conversation_id,
            contact_id=note.contact_id,
            metadata=note.metadata,
            processing_mode=note.processing_mode,
            app_id=callback.app_id,
            callback=receipt.as_event_data(),
        )
        return True

    @event(Submitted)
    def _apply_submission(self, channel: str | None, **_: Any) -> None:
        self.report_keys[submission_key(channel)] = self.version

    def record_report(self, callback: DeliveryCallback, receipt: Receipt) -> bool:
        """Appends the report's event (FirstReported on a new message, else DeliveryReported);
        False when this report is already recorded."""
        report = callback.message_delivery_report
        channel = report.channel_identity.channel if report.channel_identity else None
        if report_key(channel, report.status) in self.report_keys:
            return False
        fields = dict(
            project_id=self.project_id,
            message_id=self.message_id,
            status=report.status,
            channel=channel,
            identity=report.channel_identity.identity if report.channel_identity else None,
            event_time=callback.event_time,
            accepted_time=callback.accepted_time,
            reason=report.reason.model_dump(exclude_none=True) if report.reason else None,
            conversation_id=report.conversation_id,
            contact_id=report.contact_id,
            metadata=report.metadata,
            processing_mode=report.processing_mode,
            app_id=callback.app_id,
            callback=receipt.as_event_data(),
        )
        if self._only_registered():
            # Not saved yet: its Registered event becomes the first report.
            registered = self.pending_events[0]
            first = self.FirstReported(
                originator_id=self.id,
                originator_version=registered.originator_version,
                timestamp=registered.timestamp,
                originator_topic=registered.originator_topic,  # type: ignore[attr-defined]
                **fields,
            )
            self.pending_events[0] = first
            first.apply(self)
        else:
            self.trigger_event(self.DeliveryReported, **fields)
        return True

    def _only_registered(self) -> bool:
        pending = self.pending_events
        return len(pending) == 1 and type(pending[0]) is Message.Registered  # type: ignore[attr-defined]

    @event(DeliveryReported)
    def _apply_report(self, status: str, channel: str | None, **_: Any) -> None:
        self.report_keys[report_key(channel, status)] = self.version
