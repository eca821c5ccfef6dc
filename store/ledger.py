"""The application service: turns a received callback into a Command (which stream, what
decision) and commits Commands alone (`execute`, retrying optimistic-concurrency conflicts) or
many in one transaction (`execute_many`, the group commit the writer thread drives).
Synchronous, like the library."""

from __future__ import annotations

import base64
import logging
import os
import random
import time
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass
from datetime import datetime
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

from domain import ids
from domain.callbacks import (
    INTERPRETED_TRIGGERS,
    LENIENT_TRIGGERS,
    DeliveryCallback,
    InboundCallback,
    InvalidCallback,
    OptInCallback,
    OptOutCallback,
    SubmitCallback,
    detect_trigger,
    loads_body,
    parse_callback,
)
from domain.contact import Contact, contact_key, fact_key
from domain.message import Message, report_key, submission_key
from domain.receipt import Receipt
from domain.unrecognised import QuarantinedCallback, UnrecognisedCallback
from store import dedupe
from store.compression import state_compressor
from store.config import Settings, eventsourcing_env, sqlite_path
from store.mapper import FastMapper

log = logging.getLogger("callback_ledger")
# How a message's stream starts: Registered (then its first report), or FirstReported.
MESSAGE_CREATED = (get_topic(Message.Registered), get_topic(Message.FirstReported))  # type: ignore[attr-defined]

MAX_ATTEMPTS = 50
BATCH_ATTEMPTS = 3


class StoreContention(RuntimeError):
    """Optimistic-concurrency retries ran out; the sender should try again later."""


class StoreMoved(OSError):
    """The SQLite file at the configured path is not the one this process opened (deleted or
    replaced while it ran): what it writes would go to a file nobody will read again."""


def file_identity(path: str) -> tuple[int, int] | None:
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return None
    return found.st_dev, found.st_ino


@dataclass(frozen=True)
class Command:
    """Recording one interpreted callback: which stream, how to start it, and the aggregate's
    decision (True: events were added; False: already recorded). `dedupe_key`: the key of the
    fact it would append to a Contact stream; when the contact no longer remembers all its keys,
    the store's key table is asked first, and a key found there is a duplicate."""

    trigger: str
    aggregate_id: UUID
    create: Callable[[], Aggregate]
    decide: Callable[[Any], bool]
    dedupe_key: str | None = None


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


# A catch-all stream holds one event: its reference is `<stream>/received`.
CATCH_ALL_KEY = "received"
CATCH_ALL_TOPIC = get_topic(UnrecognisedCallback.Received)  # type: ignore[attr-defined]


def outcomes(planned: list[Planned]) -> list[Outcome | BaseException]:
    return [
        Outcome("accepted" if accepted else "duplicate", command.trigger, events if accepted else 0)
        for command, accepted, events in planned
    ]


class Ledger(Application[UUID]):
    name = "Ledger"
    # Contacts collect every inbound message; snapshots (bounded: see Contact) keep their reload
    # short.
    snapshotting_intervals: ClassVar[dict[type[Aggregate], int]] = {Contact: 200}

    # Event state is stored zstd-compressed (store.compression); off only to write
    # the plain JSON a dictionary is trained on, or a store as earlier versions wrote it.
    compress_state: ClassVar[bool] = True

    # SQLite: the database file as opened, checked around every write (see `_check_file`).
    _sqlite_file: str | None = None
    _sqlite_identity: tuple[int, int] | None = None
    _moved: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Ledger:
        ledger = cls(env=eventsourcing_env(settings.database_url, settings.db_timeout_s))
        if settings.backend == "sqlite":
            ledger._sqlite_file = os.path.abspath(sqlite_path(settings.database_url))
            ledger._sqlite_identity = file_identity(ledger._sqlite_file)
        return ledger

    def _check_file(self) -> None:
        """Raises StoreMoved, for good, once the SQLite file this process writes to is no
        longer the one at its path: a 2xx must mean the callback is in the store people read.
        A stat, a few microseconds, before and after each transaction."""
        if self._sqlite_file is None:
            return
        if self._moved is None and file_identity(self._sqlite_file) != self._sqlite_identity:
            self._moved = (
                f"the SQLite database {self._sqlite_file} was deleted or replaced while this "
                "process was running: it refuses to write anywhere else; restart it"
            )
            log.error("%s", self._moved)
        if self._moved is not None:
            raise StoreMoved(self._moved)

    def construct_mapper(self) -> Mapper[UUID]:
        library = super().construct_mapper()
        compressor = state_compressor() if self.compress_state else None
        return FastMapper(Mapper(library.transcoder, compressor, library.cipher))

    def save(self, *aggregates: Any, **kwargs: Any) -> list[Recording[UUID]]:
        """As the library's save, for aggregates only. The library first checks every object
        against runtime-checkable Protocols, which cost more than encoding its events."""
        if kwargs or not all(isinstance(a, Aggregate) for a in aggregates):
            return super().save(*aggregates, **kwargs)
        self._check_file()
        processing = collected(aggregates)
        recordings = self._record(processing)
        # Committed, but perhaps into a file that was just unlinked: then not acknowledged.
        self._check_file()
        self._take_snapshots(processing)
        self._notify(recordings)
        return recordings

    def _record(self, processing_event: ProcessingEvent[UUID]) -> list[Recording[UUID]]:
        """As the library's, with the dedupe keys of the Contact facts among the events, which
        the recorder writes in the same transaction (store.dedupe)."""
        rows = dedupe.rows(processing_event.events)
        if rows:
            processing_event.saved_kwargs["dedupe"] = rows
        return super()._record(processing_event)

    def recorded(self, facts: Iterable[Fact]) -> set[Fact]:
        """Which of these facts the store's key table holds (committed facts)."""
        pairs = {(stream, dedupe.key_bytes(key)): (stream, key) for stream, key in facts}
        if not pairs:
            return set()
        found = self.recorder.recorded(list(pairs))  # type: ignore[attr-defined]
        return {pairs[pair] for pair in found}

    @staticmethod
    def to_look_up(commands: list[Command], touched: dict[UUID, Aggregate]) -> set[Fact]:
        """The facts of `commands` their (loaded) streams cannot decide alone: the contact
        has forgotten some keys. A stream not in the store yet has no facts there."""
        return {
            (c.aggregate_id, c.dedupe_key)
            for c in commands
            if c.dedupe_key is not None
            and c.aggregate_id in touched
            and not getattr(touched[c.aggregate_id], "remembers_all", True)
        }

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
        try:
            callback = parse_callback(trigger, body)
        except InvalidCallback:
            if trigger in LENIENT_TRIGGERS:
                return None
            raise
        project_id = callback.project_id
        if isinstance(callback, SubmitCallback):
            submitted_id = callback.message_submit_notification.message_id
            return Command(
                trigger,
                Message.create_id(project_id, submitted_id),
                lambda: Message(project_id=project_id, message_id=submitted_id),
                lambda m: m.record_submission(callback, receipt),
            )
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
            dedupe_key = fact_key(callback, receipt)
        else:
            assert isinstance(callback, OptInCallback | OptOutCallback)
            note = (
                callback.opt_in_notification
                if isinstance(callback, OptInCallback)
                else callback.opt_out_notification
            )
            key = contact_key(note.contact_id, note.channel, note.identity)
            decide = lambda c: c.record_consent(callback, receipt)  # noqa: E731
            dedupe_key = fact_key(callback, receipt)
        return Command(
            trigger,
            Contact.create_id(project_id, key),
            lambda: Contact(project_id=project_id, contact_key=key),
            decide,
            dedupe_key,
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
            aggregate, created = self._load_or_create(command)
            asked = set() if created else self.to_look_up([command], {aggregate.id: aggregate})
            if (asked and self.recorded(asked)) or not command.decide(aggregate):
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
        recorded = self.recorded(self.to_look_up(commands, touched))
        planned = self.decide_all(commands, touched, recorded)
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
    def decide_all(
        commands: list[Command], touched: dict[UUID, Aggregate], recorded: set[Fact] | None = None
    ) -> list[Planned]:
        """Each command's decision on its stream, in order; new streams are started in
        `touched`. `recorded`: the facts the store's key table was found to hold (a duplicate,
        whatever the stream remembers). Pure: no storage."""
        planned: list[Planned] = []
        # Also the facts this batch appends: a contact may forget one before the batch ends.
        known = set(recorded or ())
        for command in commands:
            created = False
            aggregate = touched.get(command.aggregate_id)
            if aggregate is None:
                aggregate, created = command.create(), True
            touched[command.aggregate_id] = aggregate
            fact = (command.aggregate_id, command.dedupe_key)
            if command.dedupe_key is not None and fact in known:
                planned.append((command, False, 0))
                continue
            # The stream's Registered event counts for the command that started it.
            before = 0 if created else len(aggregate.pending_events)
            accepted = command.decide(aggregate)
            planned.append((command, accepted, len(aggregate.pending_events) - before))
            if accepted and command.dedupe_key is not None:
                known.add(fact)  # type: ignore[arg-type]
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
        """Many streams in one query (the repository takes two round trips per stream): each
        one's latest snapshot and the events after it, ordered by stream and version (a
        snapshot comes before the events that follow it)."""
        table = self.recorder.events_table_name
        columns = "originator_id, originator_version, topic, state"
        if isinstance(self.recorder, SQLiteApplicationRecorder):
            params: list[Any] = [i.hex for i in ids]
            where = f"originator_id IN ({', '.join('?' * len(params))})"
        else:
            params, where = [list(ids)], "originator_id = ANY(%s)"
        order = "ORDER BY originator_id, originator_version"
        if self.snapshots is None:
            return f"SELECT {columns} FROM {table} WHERE {where} {order}", params
        snapshots = self.snapshots.recorder.events_table_name  # type: ignore[attr-defined]
        # Each stream's latest snapshot version once, then a range of the events' primary key
        # (a condition per event row would read the whole stream again).
        if isinstance(self.recorder, SQLiteApplicationRecorder):
            ids_sql = f"SELECT column1 AS i FROM (VALUES {', '.join(['(?)'] * len(params))})"
            tail = (
                f"latest JOIN {table} x ON x.originator_id = latest.i "
                "AND x.originator_version > COALESCE(latest.v, 0)"
            )
        else:
            ids_sql = "SELECT i FROM unnest(%s::uuid[]) AS ids(i)"
            # OFFSET 0 keeps it a per-stream index range: PostgreSQL would otherwise hash the
            # streams' every event.
            tail = (
                f"latest, LATERAL (SELECT {columns} FROM {table} e WHERE e.originator_id = "
                "latest.i AND e.originator_version > COALESCE(latest.v, 0) OFFSET 0) x"
            )
        picked = ", ".join(f"x.{c.strip()}" for c in columns.split(","))
        sql = (
            f"WITH latest AS (SELECT i, (SELECT MAX(originator_version) FROM {snapshots} l "
            f"WHERE l.originator_id = q.i) AS v FROM ({ids_sql}) AS q) "
            f"SELECT {picked} FROM latest JOIN {snapshots} x "
            "ON x.originator_id = latest.i AND x.originator_version = latest.v "
            f"UNION ALL SELECT {picked} FROM {tail} ORDER BY 1, 2"
        )
        return sql, params

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
                kept = self.mapper.to_domain_event(notification)
                if kept.trigger not in INTERPRETED_TRIGGERS:
                    continue
                received = kept.callback
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

    def keyed_event(self, originator_id: UUID, key: str) -> Any | None:
        """The event a reference `<stream>/<key>` names, or None. A contact's is found by the
        key index and only it is read; a message's stream holds one event per distinct report
        (few), so it is read whole, as before."""
        version = self._keyed_version(originator_id, key)
        if version is not None:
            stored = self.recorder.select_events(originator_id, gt=version - 1, lte=version)
            return self.mapper.to_domain_event(stored[0]) if stored else None
        first = self.recorder.select_events(originator_id, lte=1)
        if first and key == CATCH_ALL_KEY and first[0].topic == CATCH_ALL_TOPIC:
            return self.mapper.to_domain_event(first[0])  # the catch-all's one event
        if not first or first[0].topic not in MESSAGE_CREATED:
            return None
        for stored_event in self.recorder.select_events(originator_id):
            if stored_event.topic == MESSAGE_CREATED[0]:
                continue
            event = self.mapper.to_domain_event(stored_event)
            if (
                isinstance(event, Message.DeliveryReported | Message.FirstReported)
                and report_key(event.channel, event.status) == key
            ) or (isinstance(event, Message.Submitted) and submission_key(event.channel) == key):
                return event
        return None

    def _keyed_version(self, originator_id: UUID, key: str) -> int | None:
        """The version of a Contact fact by its key: one primary-key lookup in the dedupe
        table (store.dedupe), whatever the stream's length."""
        recorder = self.recorder
        sqlite = isinstance(recorder, SQLiteApplicationRecorder)
        stream: Any = originator_id.hex if sqlite else originator_id
        sql = (
            f"SELECT originator_version FROM {dedupe.TABLE} "
            "WHERE originator_id = ? AND dedupe_key = ?"
        )
        params = [stream, dedupe.key_bytes(key)]
        if sqlite:
            with recorder.datastore.transaction(commit=False) as cursor:
                cursor.execute(sql, params)
                row = cursor.fetchone()
        else:
            with recorder.datastore.get_connection() as conn:  # type: ignore[attr-defined]
                row = conn.execute(sql.replace("?", "%s"), params).fetchone()
        return None if row is None else int(row["originator_version"])

    def ping(self) -> int:
        """The head of the event log; raises when the store cannot be reached."""
        self._check_file()
        return self.recorder.max_notification_id() or 0
