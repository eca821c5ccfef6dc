"""PostgreSQL behind the backend seam (store.backend): a server, several writers at once; and
the group commit's driver for it, on the event loop: deciding and encoding run between
requests and the database is awaited on an asynchronous connection, so no request waits for
the GIL to come back from a writer thread."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit
from uuid import UUID

import psycopg
from eventsourcing.persistence import IntegrityError, OperationalError
from psycopg.rows import dict_row, tuple_row
from psycopg_pool import ConnectionPool, PoolTimeout

from store import dedupe
from store.backend import ROWLESS, Backend, ConfigError, Cursor, Row, upsert_sql
from store.commands import Command, Fact, Outcome, collected
from store.group_commit import (
    Alone,
    Attempt,
    Effect,
    GroupCommit,
    Load,
    Lookup,
    Observer,
    Result,
    execute_alone,
    settle,
)
from store.postgres_recorder import CopyInsert, SealedPostgresApplicationRecorder
from store.vault import Vault

if TYPE_CHECKING:
    from eventsourcing.domain import Aggregate

    from store.ledger import Ledger


SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")


class PoolConnections:
    """A small pool, opened on first use: the service starts while the database is down."""

    def __init__(self, connect: dict[str, Any], timeout_s: int) -> None:
        self._pool = ConnectionPool(
            kwargs={**connect, "row_factory": dict_row},
            min_size=1,
            max_size=4,
            timeout=timeout_s,
            open=False,
        )

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        self._pool.open(wait=False)
        with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            yield cur

    @contextmanager
    def read(self) -> Iterator[Any]:
        self._pool.open(wait=False)
        with self._pool.connection() as conn, conn.cursor() as cur:
            yield cur

    def close(self) -> None:
        self._pool.close()


# SQLSTATE classes that say the server is unreachable, shutting down, out of resources, or
# that the transaction lost a race or waited too long: nothing about the statement itself.
TRANSIENT = ("08", "40", "53", "55", "57")


class PostgresBackend(Backend):
    name = "postgresql"
    several_writers = True
    for_update = " FOR UPDATE"
    log_id_column = "notification_id"
    events_table = "ledger_events"
    log_id_text = "originator_id::text"

    def __init__(self, url: str, timeout_s: int = 5) -> None:
        super().__init__(url, timeout_s)
        parts = urlsplit(url)
        if parts.scheme not in SCHEMES:
            raise ConfigError(
                f"LEDGER_DATABASE_URL {url!r}: expected sqlite:///path or "
                "postgresql://user[:password]@host[:port]/dbname"
            )
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        dbname = unquote(parts.path.lstrip("/"))
        host = parts.hostname or query.get("host", "")
        if not dbname or not host:
            raise ConfigError(
                f"LEDGER_DATABASE_URL {url!r}: a PostgreSQL URL needs a host and a database name"
            )
        try:
            port = str(parts.port or 5432)
        except ValueError:
            raise ConfigError(f"LEDGER_DATABASE_URL {url!r}: the port is not a number") from None
        # What psycopg connects with, for every connection of this process.
        self.connect: dict[str, Any] = {
            "dbname": dbname,
            "host": host,
            "port": port,
            "user": unquote(parts.username or query.get("user", "") or "postgres"),
            "password": unquote(parts.password or query.get("password", "")),
            "connect_timeout": timeout_s,
        }

    @property
    def eventsourcing_env(self) -> dict[str, str]:
        timeout = str(self.timeout_s)
        return {
            "CREATE_TABLE": "y",
            "IS_SNAPSHOTTING_ENABLED": "y",
            "PERSISTENCE_MODULE": "store.postgres_recorder:SealedPostgresFactory",
            "POSTGRES_DBNAME": self.connect["dbname"],
            "POSTGRES_HOST": self.connect["host"],
            "POSTGRES_PORT": self.connect["port"],
            "POSTGRES_USER": self.connect["user"],
            "POSTGRES_PASSWORD": self.connect["password"],
            "POSTGRES_CONNECT_TIMEOUT": timeout,
            "POSTGRES_LOCK_TIMEOUT": timeout,
            "POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT": str(self.timeout_s * 2),
            "POSTGRES_POOL_SIZE": "4",
            "POSTGRES_MAX_OVERFLOW": "8",
            # No pre-ping: it costs a round trip per checkout. A connection broken by a database
            # restart fails one request with 503 (the sender retries) and is then replaced.
            "POSTGRES_PRE_PING": "n",
            # Never the library's DB-functions mode: it drops the insert lock and followers then
            # skip events whose ids committed out of order.
            "POSTGRES_ENABLE_DB_FUNCTIONS": "n",
        }

    def connections(self) -> PoolConnections:
        return PoolConnections(self.connect, self.timeout_s)

    def unavailable(self, exc: BaseException) -> bool:
        if isinstance(exc, psycopg.Error):
            # A connection failure has no SQLSTATE; "index row size exceeds maximum" (54000)
            # is an OperationalError too, but caused by the row.
            if exc.sqlstate is None:
                return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
            return exc.sqlstate[:2] in TRANSIENT
        return isinstance(exc, PoolTimeout)

    def sql(self, sql: str) -> str:
        if sql.startswith("CREATE TABLE"):  # SQLite's table option (no such thing here)
            sql = sql.replace(ROWLESS, "")
        return sql.replace("?", "%s")

    def tuples(self, raw: Any, sql: str, params: Sequence[Any]) -> Sequence[Sequence[Any]]:
        # Binary: `bytea` arrives as stored instead of as (much slower) hex text.
        with raw.connection.cursor(row_factory=tuple_row, binary=True) as cur:
            rows: Sequence[Sequence[Any]] = cur.execute(self.sql(sql), tuple(params)).fetchall()
            return rows

    def dicts(self, rows: list[Any]) -> list[Row]:
        return rows  # dict_row already

    def upsert(
        self,
        cur: Cursor,
        table: str,
        columns: Sequence[str],
        keys: Sequence[str],
        rows: Sequence[Sequence[Any]],
    ) -> None:
        """A large batch goes through COPY into a staging table and one INSERT ... SELECT:
        one statement instead of one per row."""
        if len(rows) < 200:
            cur.executemany(upsert_sql(table, columns, keys), rows)
            return
        names = ", ".join(columns)
        updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in keys)
        raw = cur.raw
        raw.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS stage_{table} (LIKE {table}) ON COMMIT DELETE ROWS"
        )
        with raw.copy(f"COPY stage_{table} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        raw.execute(
            f"INSERT INTO {table} ({names}) SELECT {names} FROM stage_{table} "
            f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}"
        )

    def insert(
        self, cur: Cursor, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        """One COPY straight into the table."""
        with cur.raw.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def select_by_keys(
        self,
        cur: Cursor,
        table: str,
        columns: Sequence[str],
        key_columns: Sequence[str],
        keys: Sequence[tuple[Any, ...]],
    ) -> list[Row]:
        """An index lookup per key against unnested arrays (one parameter per key column).
        LATERAL with OFFSET 0 keeps it a lookup per key: as a plain join, PostgreSQL would
        scan the whole table while it is young."""
        names = ", ".join(f"t.{c}" for c in columns)
        first = keys[0] if keys else ()
        arrays = ", ".join(
            "?::bytea[]" if isinstance(first[i] if first else None, bytes) else "?::text[]"
            for i in range(len(key_columns))
        )
        on = " AND ".join(f"x.{c} = k.c{i}" for i, c in enumerate(key_columns))
        aliases = ", ".join(f"c{i}" for i in range(len(key_columns)))
        return cur.execute(
            f"SELECT {names} FROM unnest({arrays}) AS k({aliases}), "
            f"LATERAL (SELECT * FROM {table} x WHERE {on} OFFSET 0) t",
            [list(column) for column in zip(*keys, strict=True)],
        ).fetchall()

    def column_type(self, cur: Cursor, table: str, column: str) -> str | None:
        row = cur.execute(
            "SELECT data_type FROM information_schema.columns WHERE table_name = ? "
            "AND column_name = ? AND table_schema = current_schema()",
            (table, column),
        ).fetchone()
        return str(row["data_type"]) if row else None

    def tables_present(self, cur: Cursor, names: Sequence[str]) -> int:
        row = cur.execute(
            f"SELECT count(*) AS n FROM pg_tables WHERE tablename IN "
            f"({', '.join('?' * len(names))})",
            list(names),
        ).fetchone()
        return 0 if row is None else int(row["n"])

    def setup_lock(self, cur: Cursor, lock: int) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(?)", (lock,))

    def exclude_writers(self, cur: Cursor, table: str) -> None:
        # Conflicts with the ROW EXCLUSIVE lock each batch takes on it (store.postgres_recorder).
        cur.execute(f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE")

    def purge_deleted(self, table: str, full: bool) -> None:
        with psycopg.connect(**self.connect, autocommit=True) as conn:
            conn.execute(f"VACUUM {'FULL ' if full else ''}{table}")

    def append_only_table_ddl(self, table: str, columns: str) -> list[str]:
        return [
            f"""CREATE TABLE IF NOT EXISTS {table} (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            {columns})""",
            f"""CREATE OR REPLACE FUNCTION {table}_append_only() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'the access log is append-only'; END $$""",
            # TRUNCATE too: it is not a row delete, so it needs a statement trigger of its own.
            f"""CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}
            FOR EACH ROW EXECUTE FUNCTION {table}_append_only()""",
            f"""CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
            FOR EACH STATEMENT EXECUTE FUNCTION {table}_append_only()""",
        ]

    def log_text(self, value: Any) -> str:
        return str(value)

    def stream_param(self, stream: UUID) -> Any:
        return stream

    def select(self, datastore: Any, sql: str, params: Sequence[Any]) -> list[Any]:
        # One statement in autocommit: its own snapshot, one round trip.
        with datastore.get_connection() as conn:
            return list(conn.execute(self.sql(sql), list(params)).fetchall())

    def _streams_where(self, ids: set[UUID]) -> tuple[list[Any], str]:
        return [list(ids)], "originator_id = ANY(%s)"

    def _streams_after_snapshot(self, table: str, columns: str, count: int) -> tuple[str, str]:
        ids_sql = "SELECT i FROM unnest(%s::uuid[]) AS ids(i)"
        # OFFSET 0 keeps it a per-stream index range: PostgreSQL would otherwise hash the
        # streams' every event.
        tail = (
            f"latest, LATERAL (SELECT {columns} FROM {table} e WHERE e.originator_id = "
            "latest.i AND e.originator_version > COALESCE(latest.v, 0) OFFSET 0) x"
        )
        return ids_sql, tail


log = logging.getLogger("callback_ledger")

Connection = psycopg.AsyncConnection[dict[str, Any]]


class PostgresGroupCommit(GroupCommit):
    def __init__(
        self,
        ledger: Ledger,
        backend: PostgresBackend,
        max_batch: int = 256,
        cache_size: int = 20_000,
        observe: Observer | None = None,
    ) -> None:
        super().__init__(ledger, max_batch, cache_size, observe)
        assert isinstance(ledger.recorder, SealedPostgresApplicationRecorder)
        self.recorder = ledger.recorder
        self.timeout_s = backend.timeout_s
        self._connect = backend.connect
        self._conn: Connection | None = None
        self._pending: list[tuple[Command, asyncio.Future[Outcome]]] = []
        self._drain: asyncio.Task[None] | None = None
        # When the current attempt must have finished (each attempt has `timeout_s`).
        self._deadline = 0.0

    async def commit(self, command: Command) -> Outcome:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        self._pending.append((command, future))
        if self._drain is None or self._drain.done():
            # Starts on the next turn of the loop: requests read in this turn join the batch.
            self._drain = loop.create_task(self._drain_pending())
        return await future

    async def _drain_pending(self) -> None:
        while self._pending:
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            started = time.perf_counter()
            try:
                results = await self._run([command for command, _ in batch])
            except asyncio.CancelledError:
                for _, future in batch:
                    future.cancel()
                raise
            except Exception as exc:  # never leave a request waiting
                log.exception("group commit failed")
                results = [exc] * len(batch)
            self.done(time.perf_counter() - started, results)
            settle((future, result) for (_, future), result in zip(batch, results, strict=True))

    async def _run(self, commands: list[Command]) -> list[Result]:
        steps = self.steps(commands)
        effect = steps.advance()
        while effect is not None:
            try:
                reply = await self._perform(effect)
            except psycopg.IntegrityError as exc:
                effect = steps.advance(error=IntegrityError(exc))
            except (psycopg.OperationalError, psycopg.InterfaceError, TimeoutError) as exc:
                # Unreachable, or its state unknown after a timeout: start a new connection next
                # time. A COMMIT whose answer was lost is safe to repeat: the retry is a duplicate.
                await self._discard_connection()
                unavailable = OperationalError(f"the event store is unreachable: {exc!r}")
                effect = steps.advance(error=unavailable)
            except Exception as exc:
                effect = steps.advance(error=exc)
            else:
                effect = steps.advance(reply)
        return steps.results

    async def _perform(self, effect: Effect) -> Any:
        if isinstance(effect, Attempt):
            self._deadline = asyncio.get_running_loop().time() + self.timeout_s
            return None
        if isinstance(effect, Alone):
            return [await asyncio.to_thread(execute_alone, self.ledger, c) for c in effect.commands]
        async with asyncio.timeout_at(self._deadline):
            conn = await self._connection()
            if isinstance(effect, Load):
                sql, params = self.ledger.events_query(effect.ids)
                cursor = await conn.execute(sql, params)
                return await cursor.fetchall()
            if isinstance(effect, Lookup):
                return await self._recorded(conn, effect.facts)
            await self._write(conn, effect.aggregates)
            return None

    async def _recorded(self, conn: Connection, facts: set[Fact]) -> set[Fact]:
        """As `Ledger.recorded`, on this connection."""
        pairs = {(stream, dedupe.key_bytes(key)): (stream, key) for stream, key in facts}
        sql, params = self.recorder.recorded_query(list(pairs))
        cursor = await conn.execute(sql, params, prepare=False)  # see recorded_query
        return {pairs[r["originator_id"], bytes(r["dedupe_key"])] for r in await cursor.fetchall()}

    async def _write(self, conn: Connection, aggregates: list[Aggregate]) -> None:
        ledger = self.ledger
        processing = collected(aggregates)
        stored = [ledger.mapper.to_stored_event(e) for e in processing.events]
        insert = self.recorder.copy_insert(stored, dedupe.rows(processing.events))
        try:
            await _send(conn, insert, self.recorder.vault)
        except BaseException:
            self.recorder.vault.abandon(insert.keys.new)
            raise
        self.recorder.vault.confirm(insert.keys.new)
        if ledger.snapshots_due(processing):
            try:
                await asyncio.to_thread(ledger.take_snapshots, processing)
            except Exception:  # committed already; a missing snapshot only slows a reload
                log.exception("snapshot not taken")

    async def _connection(self) -> Connection:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(
                **self._connect, autocommit=True, row_factory=dict_row
            )
        return self._conn

    async def _discard_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def aclose(self) -> None:
        if self._drain is not None:
            with contextlib.suppress(Exception):
                await self._drain
        await self._discard_connection()


async def _send(conn: psycopg.AsyncConnection[Any], insert: CopyInsert, vault: Vault) -> None:
    """The recorder's insert (store.postgres_recorder.CopyInsert), on an asynchronous connection."""
    async with conn.cursor() as cursor:
        try:
            await cursor.execute(insert.begin)
            for statement, types, rows in insert.copies:
                async with cursor.copy(statement) as copy:
                    copy.set_types(types)
                    for row in rows:
                        await copy.write_row(row)
            await cursor.execute(*insert.seal)
            if insert.keys_statement is not None:
                await cursor.execute(*insert.keys_statement)
                found = [bytes.fromhex(r["key_id"]) for r in await cursor.fetchall()]
                insert.keys.check(vault, found)
            await cursor.execute("COMMIT")
        except BaseException:
            if not conn.closed:
                with contextlib.suppress(Exception):
                    await cursor.execute("ROLLBACK")
            raise
