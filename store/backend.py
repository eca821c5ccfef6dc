"""The backend seam, and the portable SQL of the tables beside the log.

A `Backend` (store/sqlite.py, store/postgres.py) holds everything that differs between the
databases: connection settings and the SQL dialect. `Database` and `Cursor` run SQL written
once with `?` placeholders and portable syntax; the backend swaps the placeholder style."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, ClassVar, Protocol
from uuid import UUID

from eventsourcing.persistence import PersistenceError

# A table option in the read tables' portable SQL: SQLite keeps such a table in its primary
# key's tree (no rowid, no second copy of the key); PostgreSQL has no such tables and drops it.
ROWLESS = " WITHOUT ROWID"


def upsert_sql(table: str, columns: Sequence[str], keys: Sequence[str]) -> str:
    """An insert that updates the row of the same key, in portable SQL."""
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in keys)
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
        f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}"
    )


class ConfigError(ValueError):
    pass


class StoreContention(RuntimeError):
    """Writes to one stream kept conflicting: the store is busy, the same request later may
    succeed."""


def store_unavailable(backend: Backend, exc: BaseException) -> bool:
    """Whether the database is down, busy or out of resources (nothing about what was asked),
    so the same request later may succeed: the webhook answers 503, the projector retries."""
    if isinstance(exc, StoreContention | OSError):
        return True
    if isinstance(exc, PersistenceError):
        cause = exc.__cause__
        return cause is None or store_unavailable(backend, cause)
    return backend.unavailable(exc)


class Connections(Protocol):
    """A raw DB-API cursor per transaction, for the read tables."""

    def transaction(self) -> AbstractContextManager[Any]: ...

    def read(self) -> AbstractContextManager[Any]: ...

    def close(self) -> None: ...


class Backend(ABC):
    name: ClassVar[str]
    # Whether several processes may write at once (`serve --workers`, `replay --jobs`, a
    # replay split in parts); SQLite takes one writer at a time, so more would only queue.
    several_writers: ClassVar[bool]
    # Appended to a SELECT of a row the same transaction will update.
    for_update: ClassVar[str]
    # The notification log as the projector reads it: the id column, and the stream id as text.
    log_id_column: ClassVar[str]
    log_id_text: ClassVar[str]
    # The library's name for the log's table, given the Ledger application (Ledger.events_table).
    events_table: ClassVar[str]

    def __init__(self, url: str, timeout_s: int = 5) -> None:
        self.url = url
        self.timeout_s = timeout_s

    @property
    @abstractmethod
    def eventsourcing_env(self) -> dict[str, str]:
        """The settings `eventsourcing` reads (every one that matters for safety, explicitly)."""

    @abstractmethod
    def connections(self) -> Connections:
        """A new source of connections for the read tables."""

    def store_file(self) -> str | None:
        """The file the store lives in, when it is one (checked around every write)."""
        return None

    @abstractmethod
    def unavailable(self, exc: BaseException) -> bool:
        """Whether this driver error says the database cannot serve now (`store_unavailable`)."""

    # The defaults below are SQLite's; PostgreSQL overrides them.

    def sql(self, sql: str) -> str:
        """`?` placeholders in this driver's style; `ROWLESS` kept where the database has it."""
        return sql

    def tuples(self, raw: Any, sql: str, params: Sequence[Any]) -> Sequence[Sequence[Any]]:
        """All rows of a query as positional rows."""
        rows: Sequence[Sequence[Any]] = raw.execute(sql, tuple(params)).fetchall()
        return rows

    def dicts(self, rows: list[Any]) -> list[Row]:
        return [dict(row) for row in rows]

    def upsert(
        self,
        cur: Cursor,
        table: str,
        columns: Sequence[str],
        keys: Sequence[str],
        rows: Sequence[Sequence[Any]],
    ) -> None:
        cur.executemany(upsert_sql(table, columns, keys), rows)

    def insert(
        self, cur: Cursor, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        marks = ", ".join("?" * len(columns))
        cur.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)

    @abstractmethod
    def select_by_keys(
        self,
        cur: Cursor,
        table: str,
        columns: Sequence[str],
        key_columns: Sequence[str],
        keys: Sequence[tuple[Any, ...]],
    ) -> list[Row]: ...

    @abstractmethod
    def column_type(self, cur: Cursor, table: str, column: str) -> str | None:
        """The type `column` was declared with (None: no such column)."""

    @abstractmethod
    def tables_present(self, cur: Cursor, names: Sequence[str]) -> int:
        """How many of these tables exist."""

    def setup_lock(self, cur: Cursor, lock: int) -> None:
        """Serialises table creation by processes starting together (SQLite: its write lock
        does already)."""
        return None

    def secure_delete(self, cur: Cursor) -> None:
        """Makes this transaction's deletes overwrite the deleted bytes, where the database can."""
        return None

    def exclude_writers(self, cur: Cursor, table: str) -> None:
        """Holds off the writers' batches that use rows of `table` until this transaction
        ends (SQLite has one writer at a time already)."""
        return None

    @abstractmethod
    def purge_deleted(self, table: str, full: bool) -> None:
        """Drops what the database files still keep of deleted rows (`full`: rewrite the table)."""

    @abstractmethod
    def append_only_table_ddl(self, table: str, columns: str) -> list[str]:
        """A table with an identity `id` and `columns` whose rows cannot change or go."""

    @abstractmethod
    def log_text(self, value: Any) -> str:
        """A stream id as the log query returns it (`log_id_text`), as UUID text."""

    @abstractmethod
    def stream_param(self, stream: UUID) -> Any:
        """A stream id as the events and dedupe tables store it."""

    @abstractmethod
    def select(self, datastore: Any, sql: str, params: Sequence[Any]) -> list[Any]:
        """One read statement (`?` placeholders) on the library's datastore: rows as mappings."""

    def events_query(
        self, table: str, snapshots: str | None, ids: set[UUID]
    ) -> tuple[str, list[Any]]:
        """Many streams in one query: each one's latest snapshot and the events after it,
        ordered by stream and version, in this driver's placeholder style."""
        columns = "originator_id, originator_version, topic, state"
        params, where = self._streams_where(ids)
        order = "ORDER BY originator_id, originator_version"
        if snapshots is None:
            return f"SELECT {columns} FROM {table} WHERE {where} {order}", params
        # Each stream's latest snapshot version once, then a range of the events' primary key
        # (a condition per event row would read the whole stream again).
        ids_sql, tail = self._streams_after_snapshot(table, columns, len(ids))
        picked = ", ".join(f"x.{c.strip()}" for c in columns.split(","))
        sql = (
            f"WITH latest AS (SELECT i, (SELECT MAX(originator_version) FROM {snapshots} l "
            f"WHERE l.originator_id = q.i) AS v FROM ({ids_sql}) AS q) "
            f"SELECT {picked} FROM latest JOIN {snapshots} x "
            "ON x.originator_id = latest.i AND x.originator_version = latest.v "
            f"UNION ALL SELECT {picked} FROM {tail} ORDER BY 1, 2"
        )
        return sql, params

    @abstractmethod
    def _streams_where(self, ids: set[UUID]) -> tuple[list[Any], str]: ...

    @abstractmethod
    def _streams_after_snapshot(self, table: str, columns: str, count: int) -> tuple[str, str]:
        """The streams as a one-column query `i`, and the FROM clause of their events after
        `latest.v` (aliased x)."""


Row = dict[str, Any]


class Cursor:
    """A DB-API cursor taking SQL with `?` placeholders, on either backend."""

    def __init__(self, raw: Any, backend: Backend) -> None:
        self.raw = raw
        self.backend = backend

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        self.raw.execute(self.backend.sql(sql), tuple(params))
        return self

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self.raw.executemany(self.backend.sql(sql), rows)

    def tuples(self, sql: str, params: Sequence[Any] = ()) -> Sequence[Sequence[Any]]:
        return self.backend.tuples(self.raw, sql, params)

    def fetchall(self) -> list[Row]:
        return self.backend.dicts(self.raw.fetchall())

    def fetchone(self) -> Row | None:
        row = self.raw.fetchone()
        return dict(row) if row is not None else None

    @property
    def rowcount(self) -> int:
        return int(self.raw.rowcount)


class Database:
    """The read tables' connections, from the backend."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.timeout_s = self.backend.timeout_s
        self._connections = self.backend.connections()

    @contextmanager
    def transaction(self) -> Iterator[Cursor]:
        with self._connections.transaction() as raw:
            yield Cursor(raw, self.backend)

    @contextmanager
    def read(self) -> Iterator[Cursor]:
        with self._connections.read() as raw:
            yield Cursor(raw, self.backend)

    def close(self) -> None:
        self._connections.close()


def upsert(
    cur: Cursor,
    table: str,
    columns: Sequence[str],
    keys: Sequence[str],
    rows: Sequence[Sequence[Any]],
) -> None:
    """Inserts or replaces rows."""
    cur.backend.upsert(cur, table, columns, keys, rows)


def insert(cur: Cursor, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Inserts rows known to be new (a duplicate key fails, loudly)."""
    if rows:
        cur.backend.insert(cur, table, columns, rows)


def select_by_keys(
    cur: Cursor,
    table: str,
    columns: Sequence[str],
    key_columns: Sequence[str],
    keys: Sequence[tuple[Any, ...]],
) -> list[Row]:
    """Rows whose key is one of `keys`."""
    keys = list(dict.fromkeys(keys))  # a key given twice: its row once, as IN would
    if not keys:
        return []
    return cur.backend.select_by_keys(cur, table, columns, key_columns, keys)


def time_window(column: str, since: str | None, until: str | None) -> list[tuple[str, Any]]:
    """(condition, value) pairs for `since <= column < until`; either bound may be absent."""
    window: list[tuple[str, Any]] = []
    if since is not None:
        window.append((f"{column} >= ?", since))
    if until is not None:
        window.append((f"{column} < ?", until))
    return window


def keyset_rows(
    cur: Cursor,
    table: str,
    conditions: Sequence[tuple[str, Any]],
    order: Sequence[str],
    after: Sequence[Any] | None,
    limit: int,
) -> list[Row]:
    """Up to `limit` rows of `table` meeting `conditions` ((SQL, value) pairs; a list value
    fills several placeholders, an empty one none), in `order`, after the key `after`."""
    where = [sql for sql, _ in conditions]
    params = [v for _, value in conditions for v in (value if isinstance(value, list) else [value])]
    if after is not None:
        where.append(f"({', '.join(order)}) > ({', '.join('?' * len(order))})")
        params += list(after)
    sql = f"SELECT * FROM {table}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY {', '.join(order)} LIMIT ?"
    return cur.execute(sql, [*params, limit]).fetchall()
