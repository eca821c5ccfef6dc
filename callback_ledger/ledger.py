"""The application service: turns a received callback into a Command (which stream, what
decision) and commits Commands alone (`execute`, retrying optimistic-concurrency conflicts) or
many in one transaction (`execute_many`, the group commit the writer thread drives).
Synchronous, like the library."""

from __future__ import annotations

import base64
import json
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal
from uuid import UUID

import orjson
from eventsourcing.application import (
    AggregateNotFoundError,
    Application,
    ProcessingEvent,
    Recording,
)
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    Mapper,
    OperationalError,
    StoredEvent,
)
from eventsourcing.sqlite import SQLiteApplicationRecorder
from eventsourcing.utils import get_topic

from callback_ledger import event_keys
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
from callback_ledger.domain.message import Message, report_key
from callback_ledger.domain.receipt import Receipt
from callback_ledger.domain.unrecognised import QuarantinedCallback, UnrecognisedCallback
from callback_ledger.mapper import FastMapper

MAX_ATTEMPTS = 50
BATCH_ATTEMPTS = 3


class StoreContention(RuntimeError):
    """Optimistic-concurrency retries ran out; the sender should try again later."""


@dataclass(frozen=True)
class Command:
    """Recording one interpreted callback: which stream, how to start it, and the aggregate's
    decision (True: events were added; False: already recorded)."""

    trigger: str
    aggregate_id: UUID
    create: Callable[[], Aggregate]
    decide: Callable[[Any], bool]


@dataclass(frozen=True)
class Outcome:
    status: Literal["accepted", "duplicate"]
    trigger: str
    events: int


# A command, whether its aggregate took it, and how many events that added.
Planned = tuple[Command, bool, int]


def collected(aggregates: Iterable[Aggregate]) -> ProcessingEvent[UUID]:
    """The pending events of `aggregates`, taken from them, as the library records them."""
    processing: ProcessingEvent[UUID] = ProcessingEvent()
    for aggregate in aggregates:
        if aggregate.pending_events:
            processing.events.extend(aggregate.collect_events())
            processing.aggregates[aggregate.id] = aggregate
    return processing


def created_once(trigger: str, aggregate_id: UUID, create: Callable[[], Aggregate]) -> Command:
    """A command whose stream is its whole record (a body kept once, named by its hash): it is
    accepted where this command created the stream, and a duplicate where the stream was there
    already (stored, or started by an earlier command of the same batch)."""
    made: list[Aggregate] = []

    def start() -> Aggregate:
        made[:] = [create()]
        return made[0]

    def decide(aggregate: Aggregate) -> bool:
        # Made by this command and not yet committed: a command sent again finds it committed.
        return bool(made) and aggregate is made[0] and bool(aggregate.pending_events)

    return Command(trigger, aggregate_id, start, decide)


def exact_text(raw: bytes, text: str) -> bool:
    """Whether `text` is `raw` decoded, byte for byte, and stored as JSON text (quotes,
    backslashes and control characters escaped) no longer than `raw` in base64."""
    try:
        if raw.decode() != text:
            return False
    except UnicodeDecodeError:
        return False
    return len(orjson.dumps(text)) <= (len(raw) + 2) // 3 * 4 + 2


def outcomes(planned: list[Planned]) -> list[Outcome | BaseException]:
    return [
        Outcome("accepted" if accepted else "duplicate", command.trigger, events if accepted else 0)
        for command, accepted, events in planned
    ]


class Ledger(Application[UUID]):
    name = "Ledger"
    # Contacts collect every inbound message; snapshots keep their reload short.
    snapshotting_intervals: ClassVar[dict[type[Aggregate], int]] = {Contact: 200}

    @classmethod
    def from_settings(cls, settings: Settings) -> Ledger:
        return cls(env=eventsourcing_env(settings.database_url, settings.db_timeout_s))

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        super().__init__(env=env)
        # PostgreSQL's recorder makes its key index with its tables (under their lock).
        if isinstance(self.recorder, SQLiteApplicationRecorder):
            index = event_keys.sqlite_index(self.recorder.events_table_name)
            with self.recorder.datastore.transaction(commit=True) as cursor:
                cursor.execute(index)

    def construct_mapper(self) -> Mapper[UUID]:
        return FastMapper(super().construct_mapper())

    def save(self, *aggregates: Any, **kwargs: Any) -> list[Recording[UUID]]:
        """As the library's save, for aggregates only. The library first checks every object
        against runtime-checkable Protocols, which cost more than encoding its events."""
        if kwargs or not all(isinstance(a, Aggregate) for a in aggregates):
            return super().save(*aggregates, **kwargs)
        processing = collected(aggregates)
        recordings = self._record(processing)
        self._take_snapshots(processing)
        self._notify(recordings)
        return recordings

    def accept(self, body: dict[str, Any], receipt: Receipt) -> Outcome:
        """Records a JSON callback body on its own. Raises InvalidCallback for a known trigger
        with invalid fields; persistence errors propagate (the caller answers 503)."""
        command = self.command_for(body, receipt)
        if command is None:
            return self.keep_unrecognised(body, receipt)
        return self.execute(command)

    def command_for(self, body: dict[str, Any], receipt: Receipt) -> Command | None:
        """What recording this body means, or None for a trigger we keep uninterpreted.
        Pure: validates and decides which stream, touches no storage."""
        trigger = detect_trigger(body)
        if trigger not in INTERPRETED_TRIGGERS:
            return None
        callback = parse_callback(trigger, body)
        project_id = callback.project_id
        if isinstance(callback, DeliveryCallback):
            message_id = callback.message_delivery_report.message_id
            return Command(
                trigger,
                Message.create_id(project_id, message_id),
                lambda: Message(project_id=project_id, message_id=message_id),
                lambda m: m.record_report(callback, receipt),
            )
        if isinstance(callback, InboundCallback):
            message = callback.message
            key = contact_key(
                message.contact_id,
                message.channel_identity.channel,
                message.channel_identity.identity,
            )
            decide = lambda c: c.record_inbound(callback, receipt)  # noqa: E731
        else:
            assert isinstance(callback, OptInCallback | OptOutCallback)
            note = (
                callback.opt_in_notification
                if isinstance(callback, OptInCallback)
                else callback.opt_out_notification
            )
            key = contact_key(note.contact_id, note.channel, note.identity)
            decide = lambda c: c.record_consent(callback, receipt)  # noqa: E731
        return Command(
            trigger,
            Contact.create_id(project_id, key),
            lambda: Contact(project_id=project_id, contact_key=key),
            decide,
        )

    def _load_or_create(self, command: Command) -> tuple[Aggregate, bool]:
        try:
            return self.repository.get(command.aggregate_id), False
        except AggregateNotFoundError:
            return command.create(), True

    def execute(self, command: Command) -> Outcome:
        """One command in a transaction of its own, retried on optimistic-concurrency
        conflicts: a racing duplicate becomes "duplicate" and a different report is kept too."""
        for attempt in range(MAX_ATTEMPTS):
            aggregate, _ = self._load_or_create(command)
            if not command.decide(aggregate):
                return Outcome("duplicate", command.trigger, 0)
            pending = len(aggregate.pending_events)
            try:
                self.save(aggregate)
            except IntegrityError:
                time.sleep(random.uniform(0, 0.002 * (attempt + 1)))
                continue
            return Outcome("accepted", command.trigger, pending)
        raise StoreContention(f"gave up after {MAX_ATTEMPTS} conflicting writes to one stream")

    def execute_many(
        self,
        commands: list[Command],
        cache: MutableMapping[UUID, Aggregate],
    ) -> list[Outcome | BaseException]:
        """Group commit: all commands' events in ONE transaction. Commands for the same stream
        are applied to one aggregate in order (merged, not conflicting). `cache` holds
        aggregates as last committed: a stale one can only cause a conflict, never a wrong
        decision, because committed events are never removed. A batch that conflicts (another
        process wrote to one of its streams) is decided again on freshly loaded streams; one
        that fails on a member, or keeps conflicting, is retried command by command, so the
        others still commit."""
        for _ in range(BATCH_ATTEMPTS):
            try:
                return self._commit_batch(commands, cache)
            except IntegrityError:
                continue  # the streams it touched left the cache: they are reloaded
            except (OperationalError, InterfaceError) as exc:
                # The store is unreachable: retrying each alone would only multiply the wait.
                return [exc] * len(commands)
            except Exception as exc:
                if len(commands) == 1:
                    return [exc]
                break
        return [self._execute_alone(command) for command in commands]

    def _commit_batch(
        self, commands: list[Command], cache: MutableMapping[UUID, Aggregate]
    ) -> list[Outcome | BaseException]:
        touched = self.cached(commands, cache)
        missing = {c.aggregate_id for c in commands} - touched.keys()
        if missing:
            touched.update(self.rebuild(self._select_events(missing)))
        planned = self.decide_all(commands, touched)
        dirty = [a for a in touched.values() if a.pending_events]
        if dirty:
            self.save(*dirty)
        cache.update(touched)
        return outcomes(planned)

    @staticmethod
    def cached(
        commands: list[Command], cache: MutableMapping[UUID, Aggregate]
    ) -> dict[UUID, Aggregate]:
        """The batch's streams the cache holds, taken out of it: until the batch commits they
        may carry uncommitted events."""
        return {
            c.aggregate_id: cache.pop(c.aggregate_id) for c in commands if c.aggregate_id in cache
        }

    @staticmethod
    def decide_all(commands: list[Command], touched: dict[UUID, Aggregate]) -> list[Planned]:
        """Each command's decision on its stream, in order; new streams are started in
        `touched`. Pure: no storage."""
        planned: list[Planned] = []
        for command in commands:
            created = False
            aggregate = touched.get(command.aggregate_id)
            if aggregate is None:
                aggregate, created = command.create(), True
            touched[command.aggregate_id] = aggregate
            # The stream's Registered event counts for the command that started it.
            before = 0 if created else len(aggregate.pending_events)
            accepted = command.decide(aggregate)
            planned.append((command, accepted, len(aggregate.pending_events) - before))
        return planned

    def snapshots_due(self, processing: ProcessingEvent[UUID]) -> bool:
        """Whether `_take_snapshots` would write anything for these events (it needs the
        store, so a caller on an event loop runs it in a thread, and only then)."""
        for event in processing.events:
            aggregate = processing.aggregates.get(event.originator_id)
            interval = self.snapshotting_intervals.get(type(aggregate))
            if interval and event.originator_version % interval == 0:
                return True
        return False

    def events_query(self, ids: set[UUID]) -> tuple[str, list[Any]]:
        """Many streams in one query (the repository takes two round trips per stream)."""
        table = self.recorder.events_table_name
        columns = "originator_id, originator_version, topic, state"
        if isinstance(self.recorder, SQLiteApplicationRecorder):
            params: list[Any] = [i.hex for i in ids]
            where = f"originator_id IN ({', '.join('?' * len(params))})"
        else:
            params, where = [list(ids)], "originator_id = ANY(%s)"
        order = "ORDER BY originator_id, originator_version"
        return f"SELECT {columns} FROM {table} WHERE {where} {order}", params

    def _select_events(self, ids: set[UUID]) -> list[Any]:
        sql, params = self.events_query(ids)
        datastore = self.recorder.datastore  # type: ignore[attr-defined]
        if isinstance(self.recorder, SQLiteApplicationRecorder):
            with datastore.transaction(commit=False) as cursor:
                cursor.execute(sql, params)
                return list(cursor.fetchall())
        # One statement in autocommit: its own snapshot, one round trip.
        with datastore.get_connection() as conn:
            return conn.execute(sql, params).fetchall()

    def rebuild(self, rows: list[Any]) -> dict[UUID, Aggregate]:
        """Aggregates from their stored events (rows ordered by stream and version)."""
        aggregates: dict[UUID, Aggregate] = {}
        for row in rows:
            originator_id = row["originator_id"]
            event = self.mapper.to_domain_event(
                StoredEvent(
                    originator_id=UUID(originator_id)
                    if isinstance(originator_id, str)
                    else originator_id,
                    originator_version=row["originator_version"],
                    topic=row["topic"],
                    state=bytes(row["state"]),
                )
            )
            aggregates[event.originator_id] = event.mutate(aggregates.get(event.originator_id))
        return aggregates

    def _execute_alone(self, command: Command) -> Outcome | BaseException:
        try:
            return self.execute(command)
        except Exception as exc:
            return exc

    def keep_unrecognised(self, body: dict[str, Any], receipt: Receipt) -> Outcome:
        return self.execute(self.unrecognised_command(body, receipt))

    def unrecognised_command(self, body: dict[str, Any], receipt: Receipt) -> Command:
        """The catch-all's recording: one stream per distinct body (its hash). Pure."""
        trigger = detect_trigger(body)
        project_id = body.get("project_id")
        body_hash = ids.body_hash(receipt.raw.encode())
        return created_once(
            trigger,
            UnrecognisedCallback.create_id(body_hash),
            lambda: UnrecognisedCallback(
                body_hash=body_hash,
                trigger=trigger,
                project_id=project_id if isinstance(project_id, str) else None,
                callback=receipt.as_event_data(),
            ),
        )

    def quarantine(
        self, raw: bytes, trigger: str, status_code: int, problems: list[str], receipt: Receipt
    ) -> Outcome:
        return self.execute(self.quarantine_command(raw, trigger, status_code, problems, receipt))

    def quarantine_command(
        self, raw: bytes, trigger: str, status_code: int, problems: list[str], receipt: Receipt
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

    def quarantined(
        self, after: int = 0, limit: int = 100, page: int = 8
    ) -> Iterator[dict[str, Any]]:
        """The quarantine, oldest first; `id` is the cursor for the next page. Read from the log
        `page` entries at a time: a caller that stops early, or writes each out, holds at most
        that many bodies (each up to the body limit), however large `limit`."""
        topic = get_topic(QuarantinedCallback.Quarantined)
        while limit > 0:
            notifications = self.recorder.select_notifications(
                start=after, limit=min(page, limit), topics=[topic], inclusive_of_start=False
            )
            if not notifications:
                return
            limit -= len(notifications)
            after = notifications[-1].id
            yield from self._quarantine_items(notifications)

    def _quarantine_items(self, notifications: Iterable[Any]) -> Iterator[dict[str, Any]]:
        for notification in notifications:
            event = self.mapper.to_domain_event(notification)
            yield {
                "id": notification.id,
                "trigger": event.trigger,
                "status_code": event.status_code,
                "problems": event.problems,
                "received_at": event.callback["received_at"],
                "signature_verified": event.callback["signature_verified"],
                "raw_base64": event.raw_base64
                or base64.b64encode(event.callback["raw"].encode()).decode(),
            }

    def keyed_event(self, originator_id: UUID, key: str) -> Any | None:
        """The event a reference `<stream>/<key>` names, or None. A contact's is found by the
        key index and only it is read; a message's stream holds one event per distinct report
        (few), so it is read whole, as before."""
        version = self._keyed_version(originator_id, key)
        if version is not None:
            stored = self.recorder.select_events(originator_id, gt=version - 1, lte=version)
            return self.mapper.to_domain_event(stored[0]) if stored else None
        first = self.recorder.select_events(originator_id, lte=1)
        if not first or first[0].topic != get_topic(Message.Registered):  # type: ignore[attr-defined]
            return None
        for stored_event in self.recorder.select_events(originator_id, gt=1):
            event = self.mapper.to_domain_event(stored_event)
            if (
                isinstance(event, Message.DeliveryReported)
                and report_key(event.channel, event.status) == key
            ):
                return event
        return None

    def _keyed_version(self, originator_id: UUID, key: str) -> int | None:
        recorder = self.recorder
        if isinstance(recorder, SQLiteApplicationRecorder):
            with recorder.datastore.transaction(commit=False) as cursor:
                cursor.execute(
                    event_keys.sqlite_query(recorder.events_table_name), [originator_id.hex, key]
                )
                row = cursor.fetchone()
        else:
            # The index holds the key as JSON text, escaped as the stdlib (and orjson) write it.
            as_json = json.dumps(key, ensure_ascii=False)
            with recorder.datastore.get_connection() as conn:  # type: ignore[attr-defined]
                row = conn.execute(
                    recorder.keyed_version_query(),  # type: ignore[attr-defined]
                    (originator_id, as_json),
                ).fetchone()
        return None if row is None else int(row["originator_version"])

    def ping(self) -> int:
        """The head of the event log; raises when the store cannot be reached."""
        return self.recorder.max_notification_id() or 0
