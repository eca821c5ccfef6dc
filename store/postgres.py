"""PostgreSQL behind the backend seam (store.backend): a server, several writers at once.

Its persistence fails fast: the library retries every failed read and write ten times, each
up to the pool timeout; we answer 503 after one, and the sender retries later (a connection
broken by a restart is replaced by the pool). Events go in by binary COPY under the library's
EXCLUSIVE table lock (notification ids become visible in order, so followers never skip one),
with their dedupe keys (store.dedupe), data keys (store.data_keys) and seal (store.seal) in
the same transaction: one statement reads the previous seal and the last notification id.

The group commit's driver runs on the event loop: deciding and encoding run between requests
and the database is awaited on an asynchronous connection, so no request waits for the GIL
to come back from a writer thread."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit
from uuid import UUID

import orjson
import psycopg
from eventsourcing.persistence import IntegrityError, OperationalError, StoredEvent
from eventsourcing.postgres import (
    PostgresAggregateRecorder,
    PostgresApplicationRecorder,
    PostgresFactory,
)
from psycopg.rows import dict_row, tuple_row
from psycopg.sql import SQL, Composed, Identifier, Literal
from psycopg_pool import ConnectionPool, PoolTimeout

from store import data_keys, dedupe, format_version, seal
from store.backend import ROWLESS, Backend, ConfigError, Cursor, Row, upsert_sql
from store.commands import Command, Fact, Outcome, collected
from store.data_keys import BatchKeys
from store.dedupe import TABLE as DEDUPE_TABLE
from store.dedupe import Row as DedupeRow
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
from store.vault import Vault, plaintext

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
            "PERSISTENCE_MODULE": "store.postgres:SealedPostgresFactory",
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
        # Conflicts with the ROW EXCLUSIVE lock each batch takes on it (`copy_insert`).
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


# Any number of ours: the advisory lock around the library's table creation.
CREATE_TABLES_LOCK = 4711002


class CreatesTablesOneAtATime(PostgresAggregateRecorder):
    def create_table(self) -> None:
        """The library's, under an advisory lock: processes starting together (`serve
        --workers`, `replay --jobs`) would create its types and tables at once, and
        PostgreSQL refuses one of them ("tuple concurrently updated")."""
        with self.datastore.get_connection() as conn:  # the pool's are autocommit
            conn.execute("SELECT pg_advisory_lock(%s)", (CREATE_TABLES_LOCK,))
            try:
                super().create_table()
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (CREATE_TABLES_LOCK,))


class FailFastAggregateRecorder(CreatesTablesOneAtATime):
    insert_events = PostgresAggregateRecorder.insert_events.__wrapped__
    select_events = PostgresAggregateRecorder.select_events.__wrapped__


COPY_TYPES = ["uuid", "int8", "text", "bytea"]
DEDUPE_COPY_TYPES = ["uuid", "bytea", "int8"]


def copy_row(event: StoredEvent) -> tuple[Any, ...]:
    return (event.originator_id, event.originator_version, event.topic, event.state)


@dataclass(frozen=True)
class CopyInsert:
    """A batch as sent on either connection (the recorder's, or the group commit's
    asynchronous one): `begin` (BEGIN and the table locks), each binary COPY of `copies`
    (statement, column types, rows), the `seal` statement, then `keys_statement`, whose rows
    go to `keys.check`; then COMMIT."""

    begin: Composed
    copies: list[tuple[Composed, list[str], Iterable[tuple[Any, ...]]]]
    seal: tuple[Composed, dict[str, Any]]
    keys: BatchKeys
    keys_statement: tuple[Composed, dict[str, Any]] | None


CREATE_SEALS = (
    "CREATE TABLE {0} (position bigint PRIMARY KEY, first_id bigint NOT NULL, "
    "events bigint NOT NULL, batch bytea NOT NULL, locator bytea NOT NULL, "
    "previous bytea NOT NULL, seal bytea NOT NULL, sealed_at text NOT NULL)"
)
# The events' ids in one COPY under the table lock follow each other: the batch is the last
# `n` of them.
SEAL = (
    "INSERT INTO {0} (position, first_id, events, batch, locator, previous, seal, sealed_at) "
    "SELECT h.position, h.position - %(n)s + 1, %(n)s, %(batch)s, %(locator)s, p.previous, "
    "sha256(p.previous || %(batch)s), %(at)s "
    "FROM (SELECT MAX(notification_id) AS position FROM {1}) h, "
    "(SELECT COALESCE((SELECT seal FROM {0} ORDER BY position DESC LIMIT 1), %(genesis)s) "
    "AS previous) p"
)


class SealedPostgresApplicationRecorder(CreatesTablesOneAtATime, PostgresApplicationRecorder):
    """Inserts by binary COPY, in fewer round trips than the library (which builds a
    composite-type array per save, costing more CPU than the rest of a callback's handling);
    returns no notification ids (nothing uses them). `vault` is the Ledger's, set once it
    knows the store's mode."""

    vault: Vault = plaintext()

    def create_once(self, table: str, make: Callable[[Any], None]) -> None:
        """Runs `make(conn)` (create `table`) in one transaction
        unless the table is there; processes starting together take turns (advisory lock)."""
        with self.datastore.get_connection() as conn:  # the pool's are autocommit
            conn.execute("SELECT pg_advisory_lock(%s)", (CREATE_TABLES_LOCK,))
            try:
                with conn.transaction():
                    found = conn.execute(
                        "SELECT to_regclass(%s) IS NOT NULL AS present",
                        (f"{self.datastore.schema}.{table}",),
                    ).fetchone()
                    if found is None or not found["present"]:
                        make(conn)
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (CREATE_TABLES_LOCK,))

    def create_table(self) -> None:
        super().create_table()
        self.create_once(DEDUPE_TABLE, self._create_dedupe)
        self.create_once(data_keys.TABLE, self._create_keys)
        self.create_once(format_version.TABLE, self._create_format)
        self.create_once(seal.TABLE, self._create_seals)

    def _table(self, name: str) -> Composed:
        return SQL("{0}.{1}").format(Identifier(self.datastore.schema), Identifier(name))

    def _create_seals(self, conn: Any) -> None:
        conn.execute(SQL(CREATE_SEALS).format(self._table(seal.TABLE)))

    def _create_format(self, conn: Any) -> None:
        events = self._table(self.events_table_name)
        # Until this transaction ends no event commits: the log is as empty as it looks.
        conn.execute(SQL("LOCK TABLE {0} IN SHARE MODE").format(events))
        empty = conn.execute(SQL("SELECT 1 FROM {0} LIMIT 1").format(events)).fetchone() is None
        format_version.create(conn.execute, empty, self.datastore.schema)

    def _create_keys(self, conn: Any) -> None:
        for statement in data_keys.create_statements("bytea"):
            conn.execute(
                statement.replace("CREATE TABLE ", f"CREATE TABLE {self.datastore.schema}.")
            )

    def _create_dedupe(self, conn: Any) -> None:
        conn.execute(
            SQL(
                "CREATE TABLE {0} (originator_id uuid, dedupe_key bytea, "
                "originator_version bigint, PRIMARY KEY (originator_id, dedupe_key))"
            ).format(self._table(DEDUPE_TABLE))
        )

    def recorded_query(self, pairs: Sequence[tuple[UUID, bytes]]) -> tuple[Composed, list[Any]]:
        """Which of these (stream, key) pairs the dedupe table holds. Run it unprepared
        (`prepare=False`): a prepared statement keeps the generic plan chosen while the table
        was small (a scan of all of it); unprepared, each run is an index lookup per pair."""
        sql = SQL(
            "SELECT d.originator_id, d.dedupe_key FROM {0} d "
            "JOIN unnest(%s::uuid[], %s::bytea[]) AS q(i, k) "
            "ON d.originator_id = q.i AND d.dedupe_key = q.k"
        ).format(self._table(DEDUPE_TABLE))
        return sql, [[i for i, _ in pairs], [k for _, k in pairs]]

    def recorded(self, pairs: Sequence[tuple[UUID, bytes]]) -> set[tuple[UUID, bytes]]:
        if not pairs:
            return set()
        sql, params = self.recorded_query(pairs)
        with self.datastore.get_connection() as conn, conn.cursor() as cursor:
            cursor.execute(sql, params, prepare=False)  # see `recorded_query`
            return {(r["originator_id"], bytes(r["dedupe_key"])) for r in cursor.fetchall()}

    def copy_insert(
        self, stored_events: Sequence[StoredEvent], dedupe: Sequence[DedupeRow]
    ) -> CopyInsert:
        """The events, their dedupe keys, data keys and seal in one transaction."""
        events = self._table(self.events_table_name)
        copy = SQL(
            "COPY {0} (originator_id, originator_version, topic, state) FROM STDIN (FORMAT BINARY)"
        ).format(events)
        copies: list[tuple[Composed, list[str], Iterable[tuple[Any, ...]]]] = [
            (copy, COPY_TYPES, [copy_row(event) for event in stored_events])
        ]
        if dedupe:
            copy = SQL(
                "COPY {0} (originator_id, dedupe_key, originator_version) FROM STDIN "
                "(FORMAT BINARY)"
            ).format(self._table(DEDUPE_TABLE))
            copies.append((copy, DEDUPE_COPY_TYPES, dedupe))
        keys = BatchKeys.of(self.vault, (e.state for e in stored_events))
        locks = list(self.lock_table_statements)
        if keys.new or keys.reused:
            # Taken before any snapshot of the batch: an erasure that destroys keys holds this
            # off until it commits, so `keys_statement` then sees the keys it destroyed gone;
            # and it waits for a batch already holding it (store.data_keys).
            locks.append(
                SQL("LOCK TABLE {0} IN ROW EXCLUSIVE MODE").format(self._table(data_keys.TABLE))
            )
        batch = seal.Batch.of(
            (e.originator_id, e.originator_version, e.topic, e.state) for e in stored_events
        )
        params = {
            "n": batch.events,
            "batch": batch.digest,
            "locator": batch.locator,
            "at": seal.now(),
            "genesis": seal.GENESIS,
        }
        return CopyInsert(
            SQL("; ").join([SQL("BEGIN"), *locks]),
            copies,
            (SQL(SEAL).format(self._table(seal.TABLE), events), params),
            keys,
            self.keys_statement(keys) if keys.new or keys.reused else None,
        )

    def keys_statement(self, keys: BatchKeys) -> tuple[Composed, dict[str, Any]]:
        """One statement: the new keys inserted (not a COPY: ON CONFLICT), and which of the
        reused ones still exist. No row locks (each would write its row): the table lock the
        batch took first keeps an erasure's DELETE out until this COMMIT, or the erasure came
        before and they are missing."""
        table = self._table(data_keys.TABLE)
        # Rows and ids go as one JSON text each: psycopg dumps a list of strings as an array
        # element by element in Python, which cost more than the rest of the statement. An
        # index lookup per id (LATERAL, OFFSET 0): as `key_id = ANY(...)` or a plain join,
        # PostgreSQL guesses 100 ids and, while the table is young, scans all of it instead.
        # Ids travel as hex, both ways.
        select = SQL(
            "SELECT encode(k.key_id, 'hex') AS key_id FROM "
            "json_array_elements_text(%(reused)s::json) AS r(id), LATERAL (SELECT key_id "
            "FROM {0} WHERE key_id = decode(r.id, 'hex') OFFSET 0) k"
        ).format(table)
        params: dict[str, Any] = {"reused": orjson.dumps([k.hex() for k in keys.reused]).decode()}
        if not keys.new:
            return select, params
        params["new"] = orjson.dumps(list(map(data_keys.text_row, keys.new))).decode()
        return SQL("WITH new AS ({0}) {1}").format(self.keys_insert(), select), params

    def keys_insert(self) -> Composed:
        table = self._table(data_keys.TABLE)
        # The JSON holds data_keys.text_row: hex and base64 text for the bytes columns.
        decoded = {"key_id": "hex", "wrapped": "base64"}
        fields = SQL(", ").join(
            SQL("decode(r->>{0}, {1})").format(Literal(i), Literal(decoded[name]))
            if name in decoded
            else SQL("r->>{0}").format(Literal(i))
            for i, name in enumerate(data_keys.COLUMNS)
        )
        return SQL(
            "INSERT INTO {0} ({1}) SELECT {2} FROM json_array_elements(%(new)s::json) AS r "
            "ON CONFLICT DO NOTHING"
        ).format(table, SQL(", ").join(map(Identifier, data_keys.COLUMNS)), fields)

    def insert_events(
        self,
        stored_events: Sequence[StoredEvent],
        *,
        dedupe: Sequence[DedupeRow] = (),
        **_: Any,
    ) -> None:
        if not stored_events:
            return None
        insert = self.copy_insert(stored_events, dedupe)
        with self.datastore.get_connection() as conn, conn.cursor() as cursor:
            try:
                cursor.execute(insert.begin)
                for statement, types, rows in insert.copies:
                    with cursor.copy(statement) as copy:
                        copy.set_types(types)
                        for row in rows:
                            copy.write_row(row)
                cursor.execute(*insert.seal)
                if insert.keys_statement is not None:
                    cursor.execute(*insert.keys_statement)
                    found = [bytes.fromhex(r["key_id"]) for r in cursor.fetchall()]
                    insert.keys.check(self.vault, found)
                cursor.execute("COMMIT")
            except BaseException:
                self.vault.abandon(insert.keys.new)
                if not conn.closed:
                    with contextlib.suppress(Exception):
                        cursor.execute("ROLLBACK")
                raise
        self.vault.confirm(insert.keys.new)
        return None

    select_events = PostgresAggregateRecorder.select_events.__wrapped__
    select_notifications = PostgresApplicationRecorder.select_notifications.__wrapped__
    max_notification_id = PostgresApplicationRecorder.max_notification_id.__wrapped__


class SealedPostgresFactory(PostgresFactory):
    aggregate_recorder_class = FailFastAggregateRecorder
    application_recorder_class = SealedPostgresApplicationRecorder


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
    """The recorder's insert (CopyInsert), on an asynchronous connection."""
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
