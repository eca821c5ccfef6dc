"""The event store's application: turns a received callback into a Command (store.commands)
and commits Commands one at a time (`execute`, retrying optimistic-concurrency conflicts).
Many at once in one transaction is the group commit's (store.group_commit). Synchronous, like
the library. Its catch-all and quarantine are in store.catch_all, reading one event back by
its reference in store.event_reads."""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, Iterable
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.application import Application, ProcessingEvent
from eventsourcing.domain import Aggregate, MutableOrImmutableAggregate
from eventsourcing.persistence import IntegrityError, Mapper, Recording, StoredEvent

from domain import ids
from domain.callbacks import Receipt
from domain.contact import Contact, Namer
from domain.keywords import Reading
from store import data_keys, dedupe, format_version
from store.backend import Backend, Database, StoreContention
from store.catch_all import CatchAll
from store.commands import (
    Command,
    Fact,
    Outcome,
    collected,
    command_for,
    decide_all,
    parts,
    to_look_up,
)
from store.compression import state_compressor
from store.event_reads import KeyedEvents
from store.mapper import FastMapper
from store.vault import Secrets, Vault, plaintext

log = logging.getLogger("callback_ledger")

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


class Ledger(KeyedEvents, CatchAll, Application[UUID]):
    """The event store's application: records Commands, reads streams back."""

    name = "Ledger"
    # Contacts collect every inbound message; snapshots (bounded: see Contact) keep their reload
    # short.
    snapshotting_intervals: ClassVar[dict[type[MutableOrImmutableAggregate[Any]], int]] = {
        Contact: 200
    }

    # Event state is stored zstd-compressed (store.compression); off only to write
    # the plain JSON a dictionary is trained on, or a store as earlier versions wrote it.
    compress_state: ClassVar[bool] = True

    # The database file as opened, when the store is one, checked around every write (see
    # `_check_file`).
    _store_file: str | None = None
    _store_identity: tuple[int, int] | None = None
    _moved: str | None = None

    # What differs between the databases (store.backend).
    backend: Backend

    # Personal data's keys (store.vault): plaintext until `for_backend` opens the store's;
    # the connections they are read through when the Ledger opened them (it closes them).
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
        `classify` reads inbound texts as consent facts (their retention, their reading
        kept public: store.envelope). The data keys are read through `db` (the wiring's
        connections for the tables beside the log), else through connections of its own."""
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
        except BaseException:
            ledger.close()
            raise
        if ledger.events_table != backend.events_table:
            ledger.close()
            raise RuntimeError(f"the log is {ledger.events_table}, not {backend.events_table}")
        ledger.vault = vault
        try:
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
        longer the one at its path: a 2xx must mean the callback is in the store people read.
        A stat, a few microseconds, before and after each transaction."""
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

    def command_for(self, body: dict[str, Any], receipt: Receipt) -> Command | None:
        """What recording this body means, or None for a trigger we keep uninterpreted."""
        return command_for(body, receipt, self.namer())

    def message_stream(self, project_id: str, message_id: str) -> UUID:
        """The stream a message's events are in."""
        return ids.message_id(project_id, message_id)

    def execute(self, command: Command) -> Outcome:
        """One command (and the records it carries on other streams) in a transaction of its
        own, retried on optimistic-concurrency conflicts: a racing duplicate becomes
        "duplicate" and a different report is kept too."""
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
        """Whether `_take_snapshots` would write anything for these events (it needs the
        store, so a caller on an event loop runs it in a thread, and only then)."""
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
        """As the library's, from the events' public fields (`rebuild`): a snapshot holds only
        what decisions need, and taking one loads no data key."""
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
        """Many streams in one query: each one's latest snapshot and the events after it
        (see Backend.events_query), in the backend's placeholder style."""
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
        """Aggregates from their stored events (rows ordered by stream and version), to decide
        on: without their events' personal fields, which no decision reads (no data key is
        loaded on the write path)."""
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
