"""The Contact aggregate: one stream per (project_id, contact), holding the consent facts the
provider reported, the inbound messages (where SMS "STOP" arrives), merges and deletions.
Keywords are read by the projections, so a changed keyword list can be replayed.

A contact may write to us for years: its state must not grow with its stream. It remembers the
dedupe keys of its last RECENT facts only; every fact's key is also written, in the fact's
transaction, to the store's key table (store.dedupe), which the ledger asks only when the
contact has forgotten some (`remembers_all` false). That table's primary key refuses a second
copy of a fact even when two processes decide at once."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain import ids
from domain.callbacks import (
    ContactRecord,
    DeleteCallback,
    Envelope,
    InboundCallback,
    MergeCallback,
    OptInCallback,
    OptInNotification,
    OptOutCallback,
    OptOutNotification,
    Receipt,
)
from domain.identity import normalise

# Names a channel identity in stream names and dedupe keys: (channel, identity) -> name. The
# store gives a keyed blind index in an encrypted store (store.vault); else `normalise`.
Namer = Callable[[str | None, str], str]
# How many dedupe keys a contact keeps in its state: redeliveries come soon after (Sinch retries
# within minutes), and a contact with at most this many facts needs no lookup at all.
RECENT = 64


def contact_key(
    contact_id: str | None, channel: str, identity: str | None, name: Namer | None = None
) -> str:
    """Sinch names the contact; in DISPATCH mode it may not, and the channel identity is then
    the only stable name we have. The callback models refuse a body that names neither."""
    if contact_id:
        return contact_id
    if not identity:
        raise ValueError("a contact needs a contact_id or a channel identity")
    return f"~{channel}:{(name or normalise)(channel, identity)}"


def consent_key(
    kind: str,
    callback: OptInCallback | OptOutCallback,
    note: Any,
    receipt: Receipt,
    name: Namer | None = None,
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
    identity = (name or normalise)(note.channel, note.identity) if note.identity else ""
    return f"{kind}|{note.channel}|{identity}|{note.status}|{when}"


def fact_key(
    callback: InboundCallback | OptInCallback | OptOutCallback | MergeCallback | DeleteCallback,
    receipt: Receipt,
    name: Namer | None = None,
) -> str:
    """The dedupe key of the event a callback would append to a Contact stream: a merge is
    named by its two contacts, a deletion by its contact (each happens once), an inbound
    message by its id or else its body's hash (a redelivery is byte-identical)."""
    if isinstance(callback, MergeCallback):
        note = callback.contact_merge_notification
        return f"MERGE|{note.preserved_contact.id}|{note.deleted_contact.id}"
    if isinstance(callback, DeleteCallback):
        return f"DELETE|{callback.contact_delete_notification.contact.id}"
    if isinstance(callback, InboundCallback):
        return f"INBOUND|{callback.message.id or 'body:' + ids.body_hash(receipt.raw.encode())}"
    if isinstance(callback, OptInCallback):
        return consent_key("OPT_IN", callback, callback.opt_in_notification, receipt, name)
    return consent_key("OPT_OUT", callback, callback.opt_out_notification, receipt, name)


def named_identities(contact: ContactRecord, name: Namer | None = None) -> list[dict[str, str]]:
    """A contact's channel identities as the read tables name them (`contact_key`'s names):
    what a merge or deletion says about which numbers were the contact's."""
    return [
        {
            "contact_id": contact.id,
            "channel": ci.channel,
            "name": (name or normalise)(ci.channel, ci.identity),
        }
        for ci in contact.channel_identities
    ]


class Contact(Aggregate):
    """Decides whether a fact is new from the keys of its last RECENT facts; the ledger asks
    the store's key table about older ones (when `remembers_all` is false)."""

    TOPIC = ids.stored("contact", "Contact")

    # With an explicit topic on the aggregate, every event class needs one, even this base.
    class Created(Aggregate.Created):
        TOPIC = ids.stored("contact", "Contact.Created")

    # 2: `seen` (every key) became `recent` (the last RECENT) and `forgotten`.
    class_version = 2

    @staticmethod
    def create_id(project_id: str, contact_key: str) -> UUID:
        return ids.contact_id(project_id, contact_key)

    @event("Registered", topic=ids.stored("contact", "Contact.Registered"))
    def __init__(self, project_id: str, contact_key: str) -> None:
        self.project_id = project_id
        self.contact_key = contact_key
        # The last RECENT facts' keys (-> version), oldest first; how many older ones left it.
        self.recent: dict[str, int] = {}
        self.forgotten = 0

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        """A first-version snapshot held every key in `seen` (insertion order is version
        order): keep the last RECENT. Every key is in the store's key table (written with the
        facts, or copied there when the table was created), so none is lost."""
        seen: dict[str, int] = state.pop("seen", {})
        kept = list(seen.items())[-RECENT:]
        state["recent"] = dict(kept)
        state["forgotten"] = len(seen) - len(kept)

    @property
    def remembers_all(self) -> bool:
        """True when `recent` holds the key of every fact of this stream."""
        return self.forgotten == 0

    def _remember(self, key: str) -> None:
        self.recent[key] = self.version
        if len(self.recent) > RECENT:
            del self.recent[next(iter(self.recent))]
            self.forgotten += 1

    class _Fact(Aggregate.Event):
        """A fact of the stream: remembered by its dedupe key. Never stored itself."""

        TOPIC = ids.stored("contact", "Contact._Fact")

        def apply(self, aggregate: Any) -> None:
            aggregate._remember(self.dedupe_key)  # type: ignore[attr-defined]

    class ConsentReported(_Fact):
        """An OPT_IN or OPT_OUT notification, succeeded or failed."""

        TOPIC = ids.stored("contact", "Contact.ConsentReported")

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

    class InboundMessageReceived(_Fact):
        TOPIC = ids.stored("contact", "Contact.InboundMessageReceived")
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

    class Merged(_Fact):
        """CONTACT_MERGE, on both contacts' streams (`role`: which of the two this one is).
        `identities`: both contacts' channel identities by name (`named_identities`), and
        `numbers` the same identities as received (personal: sealed in an encrypted store). It
        states no consent: the projections join the two contacts' facts (never lifting an
        opt-out), so a merge arriving before or after a fact gives the same answers."""

        TOPIC = ids.stored("contact", "Contact.Merged")

        project_id: str
        contact_key: str
        contact_id: str
        role: str
        preserved_contact_id: str
        deleted_contact_id: str
        identities: list[dict[str, str]]
        numbers: list[str]
        event_time: datetime | None
        accepted_time: datetime | None
        app_id: str | None
        dedupe_key: str
        callback: dict[str, Any]

    class Deleted(_Fact):
        """CONTACT_DELETE: Sinch deleted the contact. Recorded only: its consent facts stand
        (an opt-out is not lifted by forgetting who asked)."""

        TOPIC = ids.stored("contact", "Contact.Deleted")

        project_id: str
        contact_key: str
        contact_id: str
        identities: list[dict[str, str]]
        numbers: list[str]
        event_time: datetime | None
        accepted_time: datetime | None
        app_id: str | None
        dedupe_key: str
        callback: dict[str, Any]

    def _record(
        self,
        event: type[Aggregate.Event],
        key: str,
        callback: Envelope,
        receipt: Receipt,
        **fields: Any,
    ) -> bool:
        """Appends the fact unless its key is one of the recent facts' (False then; older ones
        the ledger looks up in the store's key table first)."""
        if key in self.recent:
            return False
        self.trigger_event(
            event,
            project_id=self.project_id,
            contact_key=self.contact_key,
            event_time=callback.event_time,
            accepted_time=callback.accepted_time,
            app_id=callback.app_id,
            dedupe_key=key,
            callback=receipt.as_event_data(),
            **fields,
        )
        return True

    def record_merge(
        self, callback: MergeCallback, receipt: Receipt, name: Namer | None = None
    ) -> bool:
        """A Merged event on this contact, the preserved or the deleted one."""
        note = callback.contact_merge_notification
        preserved, deleted = note.preserved_contact, note.deleted_contact
        return self._record(
            self.Merged,
            fact_key(callback, receipt),
            callback,
            receipt,
            contact_id=self.contact_key,
            role="preserved" if self.contact_key == preserved.id else "deleted",
            preserved_contact_id=preserved.id,
            deleted_contact_id=deleted.id,
            identities=named_identities(preserved, name) + named_identities(deleted, name),
            numbers=[
                ci.identity for ci in (*preserved.channel_identities, *deleted.channel_identities)
            ],
        )

    def record_delete(
        self, callback: DeleteCallback, receipt: Receipt, name: Namer | None = None
    ) -> bool:
        contact = callback.contact_delete_notification.contact
        return self._record(
            self.Deleted,
            fact_key(callback, receipt),
            callback,
            receipt,
            contact_id=contact.id,
            identities=named_identities(contact, name),
            numbers=[ci.identity for ci in contact.channel_identities],
        )

    def record_consent(
        self, callback: OptInCallback | OptOutCallback, receipt: Receipt, name: Namer | None = None
    ) -> bool:
        """`name`: how its dedupe key names the identity (`consent_key`)."""
        note: OptInNotification | OptOutNotification
        if isinstance(callback, OptInCallback):
            kind, note = "OPT_IN", callback.opt_in_notification
        else:
            kind, note = "OPT_OUT", callback.opt_out_notification
        return self._record(
            self.ConsentReported,
            consent_key(kind, callback, note, receipt, name),
            callback,
            receipt,
            kind=kind,
            status=note.status,
            channel=note.channel,
            identity=note.identity,
            request_id=note.request_id,
            error_details=note.error_details.model_dump() if note.error_details else None,
            contact_id=note.contact_id,
            processing_mode=note.processing_mode,
        )

    def record_inbound(self, callback: InboundCallback, receipt: Receipt) -> bool:
        message = callback.message
        return self._record(
            self.InboundMessageReceived,
            fact_key(callback, receipt),
            callback,
            receipt,
            message_id=message.id,
            channel=message.channel_identity.channel,
            identity=message.channel_identity.identity,
            kind=message.kind,
            text=message.text,
            accept_time=message.accept_time,
            conversation_id=message.conversation_id,
            contact_id=message.contact_id,
            processing_mode=message.processing_mode,
        )
