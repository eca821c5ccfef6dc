"""The event store's application: turns a received callback into a Command (store.commands),
commits Commands one at a time (`execute`; many at once is store.group_commit's), and reads
streams and events back. Synchronous, like the library."""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.application import Application, ProcessingEvent
from eventsourcing.domain import Aggregate, MutableOrImmutableAggregate
from eventsourcing.persistence import IntegrityError, Mapper, Recording, StoredEvent
from eventsourcing.utils import get_topic

from domain import ids
from domain.callbacks import INTERPRETED_TRIGGERS, InvalidCallback, Receipt, loads_body
from domain.contact import Contact, Namer
from domain.keywords import Reading
from domain.message import Message, report_key, submission_key
from store import data_keys, dedupe, format_version, spellings
from store.backend import Backend, Database, StoreContention
from store.commands import (
    CATCH_ALL_KEY,
    CATCH_ALL_TOPIC,
    Command,
    Fact,
    Outcome,
    collected,
    command_for,
    decide_all,
    parts,
    quarantine_command,
    to_look_up,
    unrecognised_command,
)
from store.compression import state_compressor
from store.mapper import FastMapper
from store.vault import Secrets, Vault, plaintext

log = logging.getLogger("callback_ledger")

# How a message's stream starts: Registered (then its first report), or FirstReported.
MESSAGE_CREATED = (get_topic(Message.Registered), get_topic(Message.FirstReported))  # type: ignore[attr-defined]

MAX_ATTEMPTS = 50


class StoreMoved(OSError):
    """The SQLite file at the configured path is not the one this process opened (deleted or
    replaced while it ran): what it writes would go to a file nobody will read again."""


def file_identity(path: str) -> tuple[int, int] | None:
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return None
    return found.st_dev, found.st_ino


class Ledger(Application[UUID]):
    """The event store's application: records Commands, reads streams back."""

    name = "Ledger"
    # Contacts collect every inbound message: snapshots keep their reload short.
    snapshotting_intervals: ClassVar[dict[type[MutableOrImmutableAggregate[Any]], int]] = {
        Contact: 200
    }

    # Off only to write the plain JSON a dictionary is trained on (store.compression).
    compress_state: ClassVar[bool] = True

    # The database file as opened, when the store is one (`_check_file`).
    _store_file: str | None = None
    _store_identity: tuple[int, int] | None = None
    _moved: str | None = None

    backend: Backend
    # Plaintext until `for_backend` opens the store's keys, through `_keys_db` when the
    # Ledger opened it (it closes it).
    vault: Vault = plaintext()
    _keys_db: Database | None = None
    _deciding: Mapper[UUID] | None = None

    @classmethod
    def for_backend(
        cls,
        backend: Backend,
        secrets: Secrets | None = None,
        classify: Callable[[str | None], Reading] | None = None,
        db: Database | None = None,
    ) -> Ledger:
        """The store's application. An encrypted store needs `secrets` (SecretsError);
        `classify` reads inbound texts as consent facts (store.envelope). The data keys are
        read through `db`, else through connections of its own."""
        ledger = cls(env=backend.eventsourcing_env)
        ledger.backend = backend
        ledger._store_file = backend.store_file()
        if ledger._store_file is not None:
            ledger._store_identity = file_identity(ledger._store_file)
        empty = not ledger.recorder.max_notification_id()
        if db is None:
            db = ledger._keys_db = Database(backend)
        try:
            vault = data_keys.open_vault(
                db, secrets, empty, ledger._store_file or f"{backend.name} database"
            )
            if ledger.events_table != backend.events_table:
                raise RuntimeError(f"the log is {ledger.events_table}, not {backend.events_table}")
            ledger.vault = vault
            format_version.check(db, ledger._store_file or f"the {backend.name} store")
        except BaseException:
            ledger.close()
            raise
        mapper = ledger.mapper
        assert isinstance(mapper, FastMapper)
        mapper.vault = vault
        if classify is not None:
            mapper.classify = classify
        ledger.recorder.vault = vault  # type: ignore[attr-defined]
        return ledger

    def namer(self) -> Namer | None:
        """How stream names and dedupe keys name a channel identity in this store."""
        return self.vault.index if self.vault.encrypted else None

    def _check_file(self) -> None:
        """Raises StoreMoved, for good, once the SQLite file this process writes to is no
        longer the one at its path: a 2xx must mean the callback is in the store people read."""
        if self._store_file is None:
            return
        if self._moved is None and file_identity(self._store_file) != self._store_identity:
            self._moved = (
                f"the SQLite database {self._store_file} was deleted or replaced while this "
                "process was running: it refuses to write anywhere else; restart it"
            )
            log.error("%s", self._moved)
        if self._moved is not None:
            raise StoreMoved(self._moved)

    def _deciding_mapper(self) -> Mapper[UUID]:
        if self._deciding is None:
            mapper = self.mapper
            assert isinstance(mapper, FastMapper)
            self._deciding = mapper.without_personal_fields()
        return self._deciding

    def construct_mapper(self) -> Mapper[UUID]:
        library = super().construct_mapper()
        compressor = state_compressor() if self.compress_state else None
        return FastMapper(Mapper(library.transcoder, compressor, library.cipher))

    def save(self, *aggregates: Any, **kwargs: Any) -> list[Recording[UUID]]:
        """As the library's save, without its costly Protocol checks for plain aggregates."""
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
        """As the library's, with the events' dedupe keys for the recorder (store.dedupe)."""
        rows = dedupe.rows(processing_event.events)
        if rows:
            processing_event.saved_kwargs["dedupe"] = rows
        return super()._record(processing_event)

    def recorded(self, facts: Iterable[Fact]) -> set[Fact]:
        """Which of these facts the dedupe table holds (committed facts)."""
        pairs = {(stream, dedupe.key_bytes(key)): (stream, key) for stream, key in facts}
        if not pairs:
            return set()
        found = self.recorder.recorded(list(pairs))  # type: ignore[attr-defined]
        return {pairs[pair] for pair in found}

    def command_for(self, body: dict[str, Any], receipt: Receipt) -> Command | None:
        """What recording this body means, or None for a trigger we keep uninterpreted."""
        return command_for(body, receipt, self.namer())

    def message_stream(self, project_id: str, message_id: str) -> UUID:
        """The stream a message's events are in."""
        return ids.message_id(project_id, message_id)

    def execute(self, command: Command) -> Outcome:
        """One command in a transaction of its own, retried on optimistic-concurrency
        conflicts: a racing duplicate becomes "duplicate", a different report is kept too."""
        streams = {part.aggregate_id for part in parts([command])}
        for attempt in range(MAX_ATTEMPTS):
            touched = self.rebuild(self.stored_rows(streams))
            asked = to_look_up([command], touched)
            [(_, accepted, events)] = decide_all(
                [command], touched, self.recorded(asked) if asked else set()
            )
            if not accepted:
                return Outcome("duplicate", command.trigger, 0)
            try:
                self.save(*[a for a in touched.values() if a.pending_events])
            except IntegrityError:
                time.sleep(random.uniform(0, 0.002 * (attempt + 1)))
                continue
            return Outcome("accepted", command.trigger, events)
        raise StoreContention(f"gave up after {MAX_ATTEMPTS} conflicting writes to one stream")

    def snapshots_due(self, processing: ProcessingEvent[UUID]) -> bool:
        """Whether `_take_snapshots` would write anything for these events (a caller on an
        event loop then runs it in a thread)."""
        for event in processing.events:
            aggregate = processing.aggregates.get(event.originator_id)
            interval = self.snapshotting_intervals.get(type(aggregate))  # type: ignore[arg-type]
            if interval and event.originator_version % interval == 0:
                return True
        return False

    def take_snapshots(self, processing: ProcessingEvent[UUID]) -> None:
        """The snapshots these committed events call for (see `snapshots_due`)."""
        self._take_snapshots(processing)

    def take_snapshot(
        self, aggregate_id: UUID, version: int | None = None, projector_func: Any = None
    ) -> None:
        """As the library's, from the events' public fields (`rebuild`): no data key loaded."""
        if self.snapshots is None:
            return
        rows = [
            r
            for r in self.stored_rows({aggregate_id})
            if version is None or r["originator_version"] <= version
        ]
        aggregate = self.rebuild(rows).get(aggregate_id)
        if aggregate is None:
            return
        snapshot_class = getattr(type(aggregate), "Snapshot", type(self).snapshot_class)
        assert snapshot_class is not None
        self.snapshots.put([snapshot_class.take(aggregate)])

    def events_query(self, ids: set[UUID]) -> tuple[str, list[Any]]:
        """Many streams in one query (Backend.events_query)."""
        snapshots = None
        if self.snapshots is not None:
            snapshots = self.snapshots.recorder.events_table_name  # type: ignore[attr-defined]
        return self.backend.events_query(self.events_table, snapshots, ids)

    @property
    def events_table(self) -> str:
        """The name of the library's events table: the notification log."""
        name: str = self.recorder.events_table_name  # type: ignore[attr-defined]
        return name

    def stored_rows(self, ids: set[UUID]) -> list[Any]:
        """The rows of `events_query`, read through the library's connections."""
        sql, params = self.events_query(ids)
        return self.backend.select(self.recorder.datastore, sql, params)  # type: ignore[attr-defined]

    def rebuild(self, rows: list[Any]) -> dict[UUID, Aggregate]:
        """Aggregates to decide on, from their stored rows (ordered by stream and version),
        without the personal fields no decision reads: no data key is loaded on the write path."""
        aggregates: dict[UUID, Aggregate] = {}
        mapper = self._deciding_mapper()
        for row in rows:
            originator_id = row["originator_id"]
            event: Any = mapper.to_domain_event(
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

    def close(self) -> None:
        if self._keys_db is not None:
            self._keys_db.close()
        super().close()

    def ping(self) -> int:
        """The head of the event log; raises when the store cannot be reached."""
        self._check_file()
        return self.recorder.max_notification_id() or 0

    def unrecognised_command(self, body: dict[str, Any], receipt: Receipt) -> Command:
        return unrecognised_command(body, receipt)

    def quarantine_command(
        self, raw: bytes, trigger: str, status_code: int, problems: list[str], receipt: Receipt
    ) -> Command:
        return quarantine_command(raw, trigger, status_code, problems, receipt)

    def reinterpret_kept(self, page: int = 500) -> dict[str, int]:
        """Records, with their original receipts, the callbacks an earlier version kept in the
        catch-all whose trigger this one interprets; running it again changes nothing.
        Counts by outcome."""
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

    def keyed_event(self, originator_id: UUID, key: str) -> Any | None:
        """The event a reference `<stream>/<key>` names, or None: a contact's by the dedupe
        table, a message's (one event per distinct report) by reading its stream."""
        version = self._keyed_version(originator_id, key)
        if version is not None:
            stored = self.recorder.select_events(originator_id, gt=version - 1, lte=version)
            return self.mapper.to_domain_event(stored[0]) if stored else None
        first = self.recorder.select_events(originator_id, lte=1)
        if first and key == CATCH_ALL_KEY and first[0].topic == CATCH_ALL_TOPIC:
            return self.mapper.to_domain_event(first[0])  # the catch-all's one event
        if not first or spellings.read(first[0].topic) not in MESSAGE_CREATED:
            return None
        for stored_event in self.recorder.select_events(originator_id):
            if spellings.read(stored_event.topic) == MESSAGE_CREATED[0]:
                continue
            event = self.mapper.to_domain_event(stored_event)
            if (
                isinstance(event, Message.DeliveryReported | Message.FirstReported)
                and report_key(event.channel, event.status) == key
            ) or (isinstance(event, Message.Submitted) and submission_key(event.channel) == key):
                return event
        return None

    def _keyed_version(self, originator_id: UUID, key: str) -> int | None:
        """The version of a Contact fact by its key (the dedupe table)."""
        sql = (
            f"SELECT originator_version FROM {dedupe.TABLE} "
            "WHERE originator_id = ? AND dedupe_key = ?"
        )
        params = [self.backend.stream_param(originator_id), dedupe.key_bytes(key)]
        rows = self.backend.select(self.recorder.datastore, sql, params)  # type: ignore[attr-defined]
        return int(rows[0]["originator_version"]) if rows else None
