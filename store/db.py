"""A small SQL adapter over SQLite and PostgreSQL for the read tables.

SQL is written once with `?` placeholders and portable syntax (ON CONFLICT upserts, row-value
IN lists); the backend (store.backend) swaps the placeholder style, opens the connections and
does what differs (bulk upserts and inserts, key lookups)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from store.backend import Backend

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
        """All rows of a query as positional rows: cheaper than dicts for large reads."""
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
        """A write transaction: all or nothing."""
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
    """Inserts or replaces rows (the backend picks how: see its `upsert`)."""
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
