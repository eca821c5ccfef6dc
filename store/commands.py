"""Commands: what recording a callback means (which stream, how to start it, the aggregate's
decision), including the catch-all and the quarantine (callbacks kept whole, one stream per
body named by its hash), and how a batch of them is decided on its streams. Pure: no storage."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any, Literal
from uuid import UUID

import orjson
from eventsourcing.application import ProcessingEvent
from eventsourcing.domain import Aggregate
from eventsourcing.utils import get_topic

from domain import ids
from domain.callbacks import (
    INTERPRETED_TRIGGERS,
    LENIENT_TRIGGERS,
    DeleteCallback,
    DeliveryCallback,
    InboundCallback,
    InvalidCallback,
    MergeCallback,
    OptInCallback,
    OptOutCallback,
    QuarantinedCallback,
    Receipt,
    SubmitCallback,
    UnrecognisedCallback,
    detect_trigger,
    parse_callback,
)
from domain.contact import Contact, Namer, contact_key, fact_key
from domain.message import Message, report_key, submission_key


@dataclass(frozen=True)
class Command:
    """Recording one interpreted callback: which stream, how to start it, and the aggregate's
    decision (True: events were added). `dedupe_key`: the key of the Contact fact it would
    append (looked up in the dedupe table when the contact has forgotten some). `key`: what
    names its event within the stream (a message's report key). `also`: its records on other
    streams (a merge on both contacts); accepted when any of them took it."""

    trigger: str
    aggregate_id: UUID
    create: Callable[[], Aggregate]
    decide: Callable[[Any], bool]
    dedupe_key: str | None = None
    key: str | None = None
    also: tuple[Command, ...] = ()

    @property
    def reference(self) -> str | None:
        """The callback's reference `<stream>/<key>`, as GET /callbacks/{reference} reads it
        (Ledger.keyed_event); None for a command whose event has no key."""
        key = self.dedupe_key if self.key is None else self.key
        return None if key is None else f"{self.aggregate_id}/{key}"


def parts(commands: Iterable[Command]) -> list[Command]:
    """The commands and the records on other streams they carry (`Command.also`)."""
    return [part for command in commands for part in (command, *command.also)]


@dataclass(frozen=True)
class Outcome:
    status: Literal["accepted", "duplicate"]
    trigger: str
    events: int


# A command, whether its aggregate took it, and how many events that added.
Planned = tuple[Command, bool, int]
# (stream, dedupe key): a fact of a Contact stream.
Fact = tuple[UUID, str]


def collected(aggregates: Iterable[Aggregate]) -> ProcessingEvent[UUID]:
    """The pending events of `aggregates`, taken from them, as the library records them."""
    processing: ProcessingEvent[UUID] = ProcessingEvent()
    for aggregate in aggregates:
        if aggregate.pending_events:
            processing.events.extend(aggregate.collect_events())
            processing.aggregates[aggregate.id] = aggregate
    return processing


def created_once(
    trigger: str, aggregate_id: UUID, create: Callable[[], Aggregate], key: str | None = None
) -> Command:
    """A command whose stream is its whole record (a body kept once, named by its hash):
    accepted where it created the stream, else a duplicate."""
    made: list[Aggregate] = []

    def start() -> Aggregate:
        made[:] = [create()]
        return made[0]

    def decide(aggregate: Aggregate) -> bool:
        # Made by this command and not yet committed: a command sent again finds it committed.
        return bool(made) and aggregate is made[0] and bool(aggregate.pending_events)

    return Command(trigger, aggregate_id, start, decide, key=key)


def exact_text(raw: bytes, text: str) -> bool:
    """Whether `text` is `raw` decoded, byte for byte, and stored as JSON text (quotes,
    backslashes and control characters escaped) no longer than `raw` in base64."""
    try:
        if raw.decode() != text:
            return False
    except UnicodeDecodeError:
        return False
    return len(orjson.dumps(text)) <= (len(raw) + 2) // 3 * 4 + 2


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


def outcomes(planned: list[Planned]) -> list[Outcome | BaseException]:
    return [
        Outcome("accepted" if accepted else "duplicate", command.trigger, events if accepted else 0)
        for command, accepted, events in planned
    ]


def command_for(
    body: dict[str, Any], receipt: Receipt, name: Namer | None = None
) -> Command | None:
    """What recording this body means, or None for a trigger we keep uninterpreted. Pure.
    `name`: how stream names and dedupe keys name a channel identity (a blind index)."""
    trigger = detect_trigger(body)
    if trigger not in INTERPRETED_TRIGGERS:
        return None
    try:
        callback = parse_callback(trigger, body)
    except InvalidCallback:
        if trigger in LENIENT_TRIGGERS:
            return None
        raise
    project_id = callback.project_id
    if isinstance(callback, MergeCallback | DeleteCallback):
        return contact_command(trigger, callback, receipt, name)
    if isinstance(callback, SubmitCallback | DeliveryCallback):
        return message_command(trigger, callback, receipt)
    if isinstance(callback, InboundCallback):
        message = callback.message
        key = contact_key(
            message.contact_id,
            message.channel_identity.channel,
            message.channel_identity.identity,
            name,
        )
        decide = lambda c: c.record_inbound(callback, receipt)  # noqa: E731
        dedupe_key = fact_key(callback, receipt, name)
    else:
        assert isinstance(callback, OptInCallback | OptOutCallback)
        note = (
            callback.opt_in_notification
            if isinstance(callback, OptInCallback)
            else callback.opt_out_notification
        )
        key = contact_key(note.contact_id, note.channel, note.identity, name)
        decide = lambda c: c.record_consent(callback, receipt, name)  # noqa: E731
        dedupe_key = fact_key(callback, receipt, name)
    return Command(
        trigger,
        Contact.create_id(project_id, key),
        lambda: Contact(project_id=project_id, contact_key=key),
        decide,
        dedupe_key,
    )


def message_command(
    trigger: str, callback: SubmitCallback | DeliveryCallback, receipt: Receipt
) -> Command:
    """A submission or a delivery report, on its message's stream."""
    project_id = callback.project_id
    if isinstance(callback, SubmitCallback):
        note: Any = callback.message_submit_notification
        decide = lambda m: m.record_submission(callback, receipt)  # noqa: E731
    else:
        note = callback.message_delivery_report
        decide = lambda m: m.record_report(callback, receipt)  # noqa: E731
    message_id = note.message_id
    stream = ids.message_id(project_id, message_id)
    channel = note.channel_identity.channel if note.channel_identity else None
    submitted = isinstance(callback, SubmitCallback)
    key = submission_key(channel) if submitted else report_key(channel, note.status)
    return Command(
        trigger, stream, lambda: Message.register(stream, project_id, message_id), decide, key=key
    )


def contact_command(
    trigger: str, callback: MergeCallback | DeleteCallback, receipt: Receipt, name: Namer | None
) -> Command:
    """A merge recorded on both contacts; a deletion on the deleted one."""
    project_id = callback.project_id
    key = fact_key(callback, receipt, name)

    def on(contact_id: str, decide: Callable[[Contact], bool]) -> Command:
        return Command(
            trigger,
            Contact.create_id(project_id, contact_id),
            lambda: Contact(project_id=project_id, contact_key=contact_id),
            decide,
            key,
        )

    if isinstance(callback, DeleteCallback):
        contact = callback.contact_delete_notification.contact
        return on(contact.id, lambda c: c.record_delete(callback, receipt, name))
    note = callback.contact_merge_notification
    merge = lambda c: c.record_merge(callback, receipt, name)  # noqa: E731
    deleted = on(note.deleted_contact.id, merge)
    preserved = on(note.preserved_contact.id, merge)
    if deleted.aggregate_id == preserved.aggregate_id:  # a contact merged with itself
        return preserved
    return Command(trigger, preserved.aggregate_id, preserved.create, merge, key, also=(deleted,))


def to_look_up(commands: list[Command], touched: dict[UUID, Aggregate]) -> set[Fact]:
    """The facts of `commands` whose loaded contact has forgotten some keys."""
    return {
        (c.aggregate_id, c.dedupe_key)
        for c in parts(commands)
        if c.dedupe_key is not None
        and c.aggregate_id in touched
        and not getattr(touched[c.aggregate_id], "remembers_all", True)
    }


def take_cached(
    commands: list[Command], cache: MutableMapping[UUID, Aggregate]
) -> dict[UUID, Aggregate]:
    """The batch's cached streams, taken out of the cache until the batch commits."""
    return {
        c.aggregate_id: cache.pop(c.aggregate_id)
        for c in parts(commands)
        if c.aggregate_id in cache
    }


def decide_all(
    commands: list[Command], touched: dict[UUID, Aggregate], recorded: set[Fact] | None = None
) -> list[Planned]:
    """Each command's decision on its stream, in order; new streams are started in
    `touched`. `recorded`: the facts found in the dedupe table (duplicates). Pure."""
    planned: list[Planned] = []
    # Also the facts this batch appends: a contact may forget one before the batch ends.
    known = set(recorded or ())
    for command in commands:
        decided = [_decide(part, touched, known) for part in (command, *command.also)]
        accepted = any(took for took, _ in decided)
        planned.append((command, accepted, sum(events for took, events in decided if took)))
    return planned


def _decide(command: Command, touched: dict[UUID, Aggregate], known: set[Fact]) -> tuple[bool, int]:
    """One command's decision, and how many events it added; `known` grows by an accepted fact."""
    created = False
    aggregate = touched.get(command.aggregate_id)
    if aggregate is None:
        aggregate, created = command.create(), True
    touched[command.aggregate_id] = aggregate
    if command.dedupe_key is not None and (command.aggregate_id, command.dedupe_key) in known:
        return False, 0
    # The stream's Registered event counts for the command that started it.
    before = 0 if created else len(aggregate.pending_events)
    accepted = command.decide(aggregate)
    if accepted and command.dedupe_key is not None:
        known.add((command.aggregate_id, command.dedupe_key))
    return accepted, len(aggregate.pending_events) - before
