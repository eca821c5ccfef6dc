"""SQLite behind the backend seam (store.backend): a file, one writer at a time; its application
recorder, which writes the dedupe keys (store.dedupe), the data keys (store.data_keys) and the
seal (store.seal) in the events' transaction; and the group commit's driver for it, a writer
thread (SQLite has no asynchronous driver)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future as ThreadFuture
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor

from store import data_keys as key_rows
from store import format_version, seal
from store.backend import Backend, ConfigError, Cursor, Row
from store.commands import Command, Outcome
from store.dedupe import TABLE as DEDUPE_TABLE
from store.dedupe import Row as DedupeRow
from store.group_commit import Future, GroupCommit, Observer, Result, run, settle
from store.vault import Vault, plaintext

if TYPE_CHECKING:
    from store.ledger import Ledger


def sqlite_path(url: str) -> str:
    """SQLAlchemy's convention: sqlite:///relative/path, sqlite:////absolute/path."""
    path = url.removeprefix("sqlite:///")
    if path == url or not path:
        raise ConfigError(
            f"LEDGER_DATABASE_URL {url!r}: expected sqlite:///relative/path.sqlite3 "
            "or sqlite:////absolute/path.sqlite3"
        )
    return path


# A connection that commits past this many pages of write-ahead log copies them into the file
# (SQLite's default: 1,000): the longer the log, the more often a page dirtied many times (the
# read tables' indexes on random keys) is copied once.
WAL_AUTOCHECKPOINT_PAGES = 20_000
CHECKPOINT_PRAGMA = f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}"


def unwritable_files(path: str) -> list[str]:
    """Those of a store's files (database, write-ahead log, shared-memory index) that exist and
    this process may not write: on an immutable `-shm` (memory-mapped) the process would die
    by SIGBUS at its first write, with no error to catch or log."""
    files = [path + suffix for suffix in ("", "-wal", "-shm")]
    return [f for f in files if os.path.exists(f) and not os.access(f, os.W_OK)]


class SQLiteConnections:
    """A connection per transaction: opening a SQLite file costs less than sharing one
    connection between threads safely."""

    def __init__(self, path: str, timeout_s: int) -> None:
        self.path = path
        self.timeout_s = timeout_s

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None)
        conn.row_factory = sqlite3.Row
        return conn

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        conn = self._connect()
        try:
            conn.execute(CHECKPOINT_PRAGMA)  # only a committing connection copies the log
            # IMMEDIATE takes the write lock up front, so two followers never interleave.
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn.cursor()
            except BaseException:
                conn.rollback()
                raise
            conn.commit()
        finally:
            conn.close()

    @contextmanager
    def read(self) -> Iterator[Any]:
        conn = self._connect()
        try:
            yield conn.cursor()
        finally:
            conn.close()

    def close(self) -> None:
        return None


class SQLiteBackend(Backend):
    name = "sqlite"
    several_writers = False
    for_update = ""
    log_id_column = "rowid"
    events_table = "stored_events"
    # The SQLite store keeps stream ids as 32 hex digits.
    log_id_text = "originator_id"

    def __init__(self, url: str, timeout_s: int = 5) -> None:
        super().__init__(url, timeout_s)
        self.path = sqlite_path(url)

    @property
    def eventsourcing_env(self) -> dict[str, str]:
        return {
            "CREATE_TABLE": "y",
            "IS_SNAPSHOTTING_ENABLED": "y",
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "APPLICATION_RECORDER_TOPIC": "store.sqlite:SealedSQLiteApplicationRecorder",
            "SQLITE_DBNAME": self.path,
            "SQLITE_LOCK_TIMEOUT": str(self.timeout_s),
        }

    def connections(self) -> SQLiteConnections:
        return SQLiteConnections(self.path, self.timeout_s)

    def store_file(self) -> str | None:
        return os.path.abspath(self.path)

    def unavailable(self, exc: BaseException) -> bool:
        # Locked, busy, I/O, a full disk: yes; a missing table ("no such ...") is no outage.
        return isinstance(exc, sqlite3.OperationalError) and not str(exc).startswith("no such")

    def select_by_keys(
        self,
        cur: Cursor,
        table: str,
        columns: Sequence[str],
        key_columns: Sequence[str],
        keys: Sequence[tuple[Any, ...]],
    ) -> list[Row]:
        # A join against the keys: SQLite plans `(a, b) IN (VALUES ...)` as a table scan.
        names = ", ".join(f"t.{c}" for c in columns)
        rows: list[Row] = []
        per_key = "(" + ", ".join("?" * len(key_columns)) + ")"
        on = " AND ".join(f"t.{c} = k.column{i + 1}" for i, c in enumerate(key_columns))
        for start in range(0, len(keys), 300):
            chunk = keys[start : start + 300]
            rows += cur.execute(
                f"SELECT {names} FROM (VALUES {', '.join(per_key for _ in chunk)}) AS k "
                f"JOIN {table} t ON {on}",
                [v for key in chunk for v in key],
            ).fetchall()
        return rows

    def column_type(self, cur: Cursor, table: str, column: str) -> str | None:
        row = cur.execute(
            f"SELECT type FROM pragma_table_info('{table}') WHERE name = ?", (column,)
        ).fetchone()
        return str(row["type"]) if row else None

    def tables_present(self, cur: Cursor, names: Sequence[str]) -> int:
        row = cur.execute(
            "SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' "
            f"AND name IN ({', '.join('?' * len(names))})",
            list(names),
        ).fetchone()
        return 0 if row is None else int(row["n"])

    def secure_delete(self, cur: Cursor) -> None:
        cur.execute("PRAGMA secure_delete = ON")

    def purge_deleted(self, table: str, full: bool) -> None:
        # The deleting connection overwrote the rows (secure_delete) in pages it wrote to the
        # log; copying them into the file and truncating the log leaves no older copy there.
        conn = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None)
        try:
            busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            conn.close()
        if busy and busy[0]:
            raise sqlite3.OperationalError(
                "the write-ahead log could not be truncated while other connections read it: "
                "deleted keys may still be in it until the next checkpoint"
            )

    def append_only_table_ddl(self, table: str, columns: str) -> list[str]:
        return [
            f"""CREATE TABLE IF NOT EXISTS {table} (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            {columns})""",
            f"""CREATE TRIGGER IF NOT EXISTS {table}_no_update BEFORE UPDATE ON {table}
            BEGIN SELECT RAISE(ABORT, 'the access log is append-only'); END""",
            f"""CREATE TRIGGER IF NOT EXISTS {table}_no_delete BEFORE DELETE ON {table}
            BEGIN SELECT RAISE(ABORT, 'the access log is append-only'); END""",
        ]

    def log_text(self, value: Any) -> str:
        return str(UUID(value))

    def stream_param(self, stream: UUID) -> Any:
        return stream.hex

    def select(self, datastore: Any, sql: str, params: Sequence[Any]) -> list[Any]:
        with datastore.transaction(commit=False) as cursor:
            cursor.execute(sql, list(params))
            return list(cursor.fetchall())

    def _streams_where(self, ids: set[UUID]) -> tuple[list[Any], str]:
        params: list[Any] = [i.hex for i in ids]
        return params, f"originator_id IN ({', '.join('?' * len(params))})"

    def _streams_after_snapshot(self, table: str, columns: str, count: int) -> tuple[str, str]:
        ids_sql = f"SELECT column1 AS i FROM (VALUES {', '.join(['(?)'] * count)})"
        tail = (
            f"latest JOIN {table} x ON x.originator_id = latest.i "
            "AND x.originator_version > COALESCE(latest.v, 0)"
        )
        return ids_sql, tail


CREATE_SEALS = (
    f"CREATE TABLE {seal.TABLE} (position INTEGER PRIMARY KEY, first_id INTEGER NOT NULL, "
    "events INTEGER NOT NULL, batch BLOB NOT NULL, locator BLOB NOT NULL, "
    "previous BLOB NOT NULL, seal BLOB NOT NULL, sealed_at TEXT NOT NULL)"
)
INSERT_SEAL = (
    f"INSERT INTO {seal.TABLE} ({', '.join(seal.COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
LAST_SEAL = f"SELECT seal FROM {seal.TABLE} ORDER BY position DESC LIMIT 1"
CREATE_DEDUPE = (
    f"CREATE TABLE {DEDUPE_TABLE} (originator_id TEXT, dedupe_key BLOB, "
    "originator_version INTEGER, PRIMARY KEY (originator_id, dedupe_key)) WITHOUT ROWID"
)
INSERT_DEDUPE = f"INSERT INTO {DEDUPE_TABLE} VALUES (?, ?, ?)"


class SealedSQLiteApplicationRecorder(SQLiteApplicationRecorder):
    """Each batch's seal row comes after its events, so the previous seal is read under the
    write lock those inserts took. `vault` is the Ledger's, set once it knows the store's mode."""

    vault: Vault = plaintext()

    def create_table(self) -> None:
        super().create_table()
        self.create_once(DEDUPE_TABLE, lambda cursor: cursor.execute(CREATE_DEDUPE))
        self.create_once(seal.TABLE, lambda cursor: cursor.execute(CREATE_SEALS))
        self.create_once(key_rows.TABLE, self._create_keys)
        self.create_once(format_version.TABLE, self._create_format)

    def create_once(self, table: str, make: Any) -> None:
        """Runs `make(cursor)` (create `table`) unless the table is there. Under the write lock
        (IMMEDIATE), so a process starting at the same moment waits and then finds it made."""
        with self.datastore.get_connection(commit=True) as conn:
            cursor = conn.cursor().sqlite_cursor
            try:
                cursor.execute("BEGIN IMMEDIATE")
                cursor.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
                )
                if cursor.fetchone() is None:
                    make(cursor)
                cursor.execute("COMMIT")
            except BaseException:
                conn.rollback()
                raise
            finally:
                cursor.close()

    def _create_format(self, cursor: sqlite3.Cursor) -> None:
        found = cursor.execute(f"SELECT 1 FROM {self.events_table_name} LIMIT 1").fetchone()
        format_version.create(cursor.execute, found is None)

    def _create_keys(self, cursor: sqlite3.Cursor) -> None:
        for statement in key_rows.CREATE:
            cursor.execute(statement)

    def recorded(self, pairs: Sequence[tuple[UUID, bytes]]) -> set[tuple[UUID, bytes]]:
        """Which of these (stream, key) pairs the dedupe table holds."""
        if not pairs:
            return set()
        values = ", ".join(["(?, ?)"] * len(pairs))
        params = [x for i, k in pairs for x in (i.hex, k)]
        with self.datastore.transaction(commit=False) as c:
            c.execute(self.recorded_sql(values), params)
            return {(UUID(i), bytes(k)) for i, k in c.fetchall()}

    @staticmethod
    def recorded_sql(values: str) -> str:
        # A join, not `(a, b) IN (VALUES ...)`: SQLite scans the whole table for that.
        return (
            f"SELECT d.originator_id, d.dedupe_key FROM (VALUES {values}) q "
            f"JOIN {DEDUPE_TABLE} d ON d.originator_id = q.column1 AND d.dedupe_key = q.column2"
        )

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        keys = key_rows.BatchKeys.of(self.vault, (e.state for e in stored_events))
        try:
            notification_ids = super().insert_events(stored_events, data_keys=keys, **kwargs)
        except BaseException:
            self.vault.abandon(keys.new)
            raise
        self.vault.confirm(keys.new)
        return notification_ids

    def _insert_events(
        self,
        c: SQLiteCursor,
        stored_events: Sequence[StoredEvent],
        *,
        data_keys: key_rows.BatchKeys | None = None,
        dedupe: Sequence[DedupeRow] = (),
        **kwargs: Any,
    ) -> Sequence[int] | None:
        cursor = c.sqlite_cursor
        # Per batch: the library's pool opens connections of its own (a pragma costs less
        # than telling them apart).
        cursor.execute(CHECKPOINT_PRAGMA)
        if data_keys is not None and data_keys.new:
            cursor.executemany(key_rows.INSERT, [key_rows.row(k) for k in data_keys.new])
        notification_ids = super()._insert_events(c, stored_events, **kwargs)
        if dedupe:
            cursor.executemany(INSERT_DEDUPE, [(i.hex, k, v) for i, k, v in dedupe])
        if data_keys is not None and data_keys.reused:
            # After the inserts took the write lock (a read first would have to upgrade its
            # lock, which SQLite refuses at once under contention): an erasure's DELETE comes
            # before or after this, not during.
            found = cursor.execute(
                key_rows.select_reused(len(data_keys.reused)), data_keys.reused
            ).fetchall()
            data_keys.check(self.vault, (bytes(r[0]) for r in found))
        if notification_ids:
            batch = seal.Batch.of(
                (e.originator_id, e.originator_version, e.topic, e.state) for e in stored_events
            )
            last = cursor.execute(LAST_SEAL).fetchone()
            previous = seal.GENESIS if last is None else bytes(last[0])
            s = seal.sealed(previous, notification_ids[0], notification_ids[-1], batch)
            cursor.execute(
                INSERT_SEAL,
                (s.position, s.first_id, s.events, s.batch, s.locator, s.previous, s.seal,
                 s.sealed_at),
            )  # fmt: skip
        return notification_ids


log = logging.getLogger("callback_ledger")


@dataclass
class _Job:
    command: Command
    future: Future
    loop: asyncio.AbstractEventLoop | None = None


class SQLiteGroupCommit(GroupCommit):
    def __init__(
        self,
        ledger: Ledger,
        max_batch: int = 256,
        cache_size: int = 20_000,
        observe: Observer | None = None,
    ) -> None:
        super().__init__(ledger, max_batch, cache_size, observe)
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
        self._thread.start()

    def submit(self, command: Command) -> ThreadFuture[Outcome]:
        """For callers in threads."""
        future: ThreadFuture[Outcome] = ThreadFuture()
        self._queue.put(_Job(command, future))
        return future

    async def commit(self, command: Command) -> Outcome:
        """For callers in an event loop (a batch is settled with one wake-up of the loop)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        self._queue.put(_Job(command, future, loop))
        return await future

    def stop(self) -> None:
        """Commits what is queued, then stops."""
        self._queue.put(None)
        self._thread.join(timeout=30)

    def close(self) -> None:
        self.stop()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.stop)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stopping = True
                    break
                batch.append(job)
            self._commit(batch)

    def _commit(self, batch: list[_Job]) -> None:
        started = time.perf_counter()
        try:
            results = run(self, [job.command for job in batch])
        except BaseException as exc:  # never leave a request waiting
            log.exception("group commit failed")
            results = [exc] * len(batch)
        self.done(time.perf_counter() - started, results)
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Future, Result]]] = {}
        for job, result in zip(batch, results, strict=True):
            if job.loop is None:
                settle([(job.future, result)])
            else:
                by_loop.setdefault(job.loop, []).append((job.future, result))
        for loop, settled in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop has closed: nobody waits
                loop.call_soon_threadsafe(settle, settled)
