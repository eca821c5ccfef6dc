"""Sinch Conversation API callbacks: how one was received (`Receipt`), their shapes as value
objects, and the aggregates keeping those we do not interpret. Validity is a question about the
provider's contract, not about HTTP. Unknown extra fields are kept (the raw body is stored
anyway); unknown reason codes and statuses are data, not errors, except consent statuses, where
a misread would be a legal risk and a human should look."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import orjson
from eventsourcing.domain import Aggregate, event
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from domain import ids
from domain.ids import stored


@dataclass(frozen=True)
class Receipt:
    """The callback exactly as received, kept beside every event as the audit record: raw
    text (never re-serialised), arrival time on our clock, whether its signature was
    verified, and the signature headers that came with it."""

    raw: str
    received_at: datetime
    signature_verified: bool
    headers: dict[str, str] = field(default_factory=dict)

    def as_event_data(self) -> dict[str, Any]:
        return {
            "raw": self.raw,
            "received_at": self.received_at.isoformat(),
            "signature_verified": self.signature_verified,
            "headers": dict(self.headers),
        }


# The read tables index these values, and an index entry has a size limit: ids, codes and
# identities are bounded so that any of them, in any script, fits with the others of its key.
Id = Annotated[str, Field(max_length=128)]
NonEmpty = Annotated[str, Field(min_length=1, max_length=128)]
Channel = Annotated[str, Field(min_length=1, max_length=64)]
# One bound for a channel identity wherever it is taken or looked up, so that whatever was
# accepted can be found and erased.
MAX_IDENTITY = 256
# Blank is no identity: "  " normalises to "", which stands for a contact's whole channel.
Identity = Annotated[
    str,
    BeforeValidator(lambda v: v.strip() if isinstance(v, str) else v),
    Field(min_length=1, max_length=MAX_IDENTITY),
]
Text = Annotated[str, Field(max_length=65536)]


def _blank_is_none(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


# Trigger name by the body key that carries it (Sinch's callback reference).
TRIGGER_KEYS: dict[str, str] = {
    "message_delivery_report": "MESSAGE_DELIVERY",
    "message": "MESSAGE_INBOUND",
    "opt_in_notification": "OPT_IN",
    "opt_out_notification": "OPT_OUT",
    "message_submit_notification": "MESSAGE_SUBMIT",
    "event": "EVENT_INBOUND",
    "event_delivery_report": "EVENT_DELIVERY",
    "conversation_start_notification": "CONVERSATION_START",
    "conversation_stop_notification": "CONVERSATION_STOP",
    "conversation_delete_notification": "CONVERSATION_DELETE",
    "contact_create_notification": "CONTACT_CREATE",
    "contact_update_notification": "CONTACT_UPDATE",
    "contact_delete_notification": "CONTACT_DELETE",
    "contact_merge_notification": "CONTACT_MERGE",
    "duplicated_contact_identities_notification": "CONTACT_IDENTITIES_DUPLICATION",
    "capability_notification": "CAPABILITY",
    "channel_event_notification": "CHANNEL_EVENT",
    "unsupported_callback": "UNSUPPORTED",
    "smart_conversation_notification": "SMART_CONVERSATION",
    "message_redaction": "MESSAGE_INBOUND_SMART_CONVERSATION_REDACTION",
    "record_notification": "RECORD_NOTIFICATION",
}
# Kept in the catch-all (and acknowledged) when they do not fit the contract: context, not
# consent facts, so not worth a refusal that Sinch would answer by dropping the callback.
LENIENT_TRIGGERS = frozenset({"MESSAGE_SUBMIT", "CONTACT_MERGE", "CONTACT_DELETE"})
UNKNOWN_TRIGGER = "UNKNOWN"


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    # Sinch always sends "Z"; a naive time from elsewhere is read as UTC rather than local.
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        # 0001-01-01T00:00:00+01:00 is before year 1 in UTC: a ValueError makes it a
        # validation problem naming the field, not a crash on every retry.
        raise ValueError("the time is outside years 1-9999 once converted to UTC") from None


class ChannelIdentity(_Model):
    channel: Channel
    identity: Identity
    app_id: Id | None = None


class Reason(_Model):
    code: Id | None = None
    sub_code: Id | None = None
    description: Text | None = None
    channel_code: Id | None = None


class DeliveryReport(_Model):
    message_id: NonEmpty
    status: NonEmpty
    conversation_id: Id | None = None
    # FAILED with NO_CHANNELS_LEFT and similar reports may name no channel.
    channel_identity: ChannelIdentity | None = None
    contact_id: Id | None = None
    reason: Reason | None = None
    metadata: Text | None = None
    processing_mode: str | None = None


class SubmitNotification(_Model):
    """MESSAGE_SUBMIT: Sinch handed the message to a channel (the content stays in the raw
    body only)."""

    message_id: NonEmpty
    conversation_id: Id | None = None
    channel_identity: ChannelIdentity | None = None
    contact_id: Id | None = None
    metadata: Text | None = None
    processing_mode: str | None = None


class ErrorDetails(_Model):
    description: Text | None = None


class _ConsentNotification(_Model):
    channel: Channel
    # The Java and .NET SDK fixtures leave it out: consent for the contact's whole channel.
    identity: Annotated[Identity | None, BeforeValidator(_blank_is_none)] = None
    contact_id: Id | None = None
    request_id: Id | None = None
    error_details: ErrorDetails | None = None
    processing_mode: str | None = None

    @model_validator(mode="after")
    def _names_someone(self) -> _ConsentNotification:
        if not self.contact_id and not self.identity:
            raise ValueError("names no one: neither contact_id nor identity is given")
        return self


class OptInNotification(_ConsentNotification):
    status: Literal["OPT_IN_SUCCEEDED", "OPT_IN_FAILED"]


class OptOutNotification(_ConsentNotification):
    status: Literal["OPT_OUT_SUCCEEDED", "OPT_OUT_FAILED"]


class InboundMessage(_Model):
    # The Python SDK's fixtures have none; such a message is recognised by its body's hash.
    id: NonEmpty | None = None
    channel_identity: ChannelIdentity
    contact_message: dict[str, Any]
    direction: str | None = None
    conversation_id: Id | None = None
    contact_id: Id | None = None
    metadata: Text | None = None
    accept_time: datetime | None = None
    sender_id: str | None = None
    processing_mode: str | None = None
    injected: bool | None = None

    _accept_time_utc = field_validator("accept_time")(_utc)

    @property
    def text(self) -> str | None:
        text_message = self.contact_message.get("text_message")
        if isinstance(text_message, dict):
            text = text_message.get("text")
            if isinstance(text, str):
                return text
        return None

    @property
    def kind(self) -> str:
        kinds = [k for k in self.contact_message if k.endswith("_message")]
        return kinds[0] if kinds else "unknown"


class Envelope(_Model):
    # Missing or "" in Sinch's docs examples and its webhook test script: recorded as "".
    project_id: Annotated[
        str, Field(max_length=128), BeforeValidator(lambda v: "" if v is None else v)
    ] = ""
    app_id: Id | None = None
    accepted_time: datetime | None = None
    event_time: datetime | None = None
    message_metadata: Text | None = None
    correlation_id: str | None = None

    _times_utc = field_validator("accepted_time", "event_time")(_utc)


class DeliveryCallback(Envelope):
    message_delivery_report: DeliveryReport


class OptInCallback(Envelope):
    opt_in_notification: OptInNotification


class OptOutCallback(Envelope):
    opt_out_notification: OptOutNotification


class InboundCallback(Envelope):
    message: InboundMessage


class SubmitCallback(Envelope):
    message_submit_notification: SubmitNotification


class ContactRecord(_Model):
    """A contact as CONTACT_MERGE and CONTACT_DELETE carry it: its id and channel identities
    (its name, email and the rest stay in the raw body only)."""

    id: NonEmpty
    channel_identities: Annotated[list[ChannelIdentity], Field(max_length=100)] = []


class MergeNotification(_Model):
    preserved_contact: ContactRecord
    deleted_contact: ContactRecord


class DeleteNotification(_Model):
    contact: ContactRecord


class MergeCallback(Envelope):
    """CONTACT_MERGE: Sinch merged `deleted_contact` into `preserved_contact` (one person)."""

    contact_merge_notification: MergeNotification


class DeleteCallback(Envelope):
    contact_delete_notification: DeleteNotification


Interpreted = (
    DeliveryCallback
    | OptInCallback
    | OptOutCallback
    | InboundCallback
    | SubmitCallback
    | MergeCallback
    | DeleteCallback
)

_MODELS: dict[str, type[Envelope]] = {
    "MESSAGE_DELIVERY": DeliveryCallback,
    "MESSAGE_INBOUND": InboundCallback,
    "OPT_IN": OptInCallback,
    "OPT_OUT": OptOutCallback,
    "MESSAGE_SUBMIT": SubmitCallback,
    "CONTACT_MERGE": MergeCallback,
    "CONTACT_DELETE": DeleteCallback,
}
INTERPRETED_TRIGGERS = frozenset(_MODELS)


class InvalidCallback(ValueError):
    """A callback of a known trigger whose fields do not fit Sinch's contract."""

    def __init__(self, trigger: str, problems: list[str]) -> None:
        self.trigger = trigger
        self.problems = problems
        super().__init__(f"invalid {trigger} callback: " + "; ".join(problems))


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _int(text: str) -> int:
    # What orjson reads (64 bits); a larger number could be stored but not read back.
    value = int(text)
    if not -(2**63) <= value < 2**64:
        raise ValueError("an integer beyond 64 bits")
    return value


def _float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("a number beyond the range of a double")
    return value


def _without_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_without_surrogates(k): _without_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_surrogates(v) for v in value]
    return value


def loads_body(raw: bytes) -> Any:
    """A callback body as JSON. Escaped lone surrogates ("\\ud800"), which orjson refuses and
    no store can hold as text, become U+FFFD (the raw bytes are kept as they came). Raises
    orjson.JSONDecodeError (a ValueError) for anything else that is not JSON."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as refused:
        try:
            # Whatever orjson refuses for another reason is refused here too.
            body = json.loads(
                raw.decode("utf-8"),
                parse_constant=_no_constant,
                parse_int=_int,
                parse_float=_float,
            )
            return _without_surrogates(body)
        except (ValueError, RecursionError):
            raise refused from None


def detect_trigger(body: dict[str, Any]) -> str:
    """The trigger a body carries, UNKNOWN when none we know; InvalidCallback when several."""
    found = [TRIGGER_KEYS[key] for key in body if key in TRIGGER_KEYS]
    if len(found) > 1:
        raise InvalidCallback(
            UNKNOWN_TRIGGER, [f"the body carries more than one trigger: {', '.join(found)}"]
        )
    return found[0] if found else UNKNOWN_TRIGGER


def parse_callback(trigger: str, body: dict[str, Any]) -> Interpreted:
    """Validates a body of one of the interpreted triggers; raises InvalidCallback saying which
    fields are wrong."""
    model = _MODELS[trigger]
    try:
        return model.model_validate(body)  # type: ignore[return-value]
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}"
            for err in exc.errors(include_url=False)
        ]
        raise InvalidCallback(trigger, problems[:20]) from None


# ---- callbacks we keep but do not interpret: one aggregate per distinct body, named by its
# hash, so a retried body is stored once and concurrent bodies never contend for one stream.


class UnrecognisedCallback(Aggregate):
    """A callback of a trigger we do not interpret (EVENT_INBOUND, ...) or of none we know.
    Kept whole, so a later version can interpret it from the log."""

    TOPIC = stored("unrecognised", "UnrecognisedCallback")

    # With an explicit topic on the aggregate, every event class needs one, even this base.
    class Created(Aggregate.Created):
        TOPIC = stored("unrecognised", "UnrecognisedCallback.Created")

    @staticmethod
    def create_id(body_hash: str) -> UUID:
        return ids.body_id("unrecognised", body_hash)

    # `app_id` and `event_time` (as the body gives it): what the body says of itself, public,
    # so the callbacks list shows them without opening the body. Events from before lack them.
    @event("Received", topic=stored("unrecognised", "UnrecognisedCallback.Received"))
    def __init__(
        self,
        body_hash: str,
        trigger: str,
        project_id: str | None,
        callback: dict[str, Any],
        app_id: str | None = None,
        event_time: str | None = None,
    ) -> None:
        self.trigger = trigger
        self.project_id = project_id


class QuarantinedCallback(Aggregate):
    """A body we refused (not JSON, or a known trigger with invalid fields) but keep, so an
    operator can fix it and feed it back. The body is stored once: as `callback["raw"]` when
    that is exactly the body and no longer than its base64, else as `raw_base64`."""

    TOPIC = stored("unrecognised", "QuarantinedCallback")

    class Created(Aggregate.Created):
        TOPIC = stored("unrecognised", "QuarantinedCallback.Created")

    @staticmethod
    def create_id(body_hash: str) -> UUID:
        return ids.body_id("quarantine", body_hash)

    @event("Quarantined", topic=stored("unrecognised", "QuarantinedCallback.Quarantined"))
    def __init__(
        self,
        body_hash: str,
        trigger: str,
        status_code: int,
        problems: list[str],
        raw_base64: str | None,
        callback: dict[str, Any],
    ) -> None:
        self.trigger = trigger
        self.problems = problems

    # Set by a resolution (console: re-ingested or reviewed); the body itself stays.
    resolution: dict[str, Any] | None = None

    def resolve(self, outcome: str, by: str, at: str, note: str, result: str | None) -> bool:
        """Records how an operator resolved this entry, once: True if it was recorded now,
        False if it was resolved before (a second resolve, or a retried one, adds nothing)."""
        if self.resolution is not None:
            return False
        self._resolved(outcome=outcome, by=by, at=at, note=note, result=result)
        return True

    @event("Resolved", topic=stored("unrecognised", "QuarantinedCallback.Resolved"))
    def _resolved(self, outcome: str, by: str, at: str, note: str, result: str | None) -> None:
        self.resolution = {"outcome": outcome, "by": by, "at": at, "note": note, "result": result}
