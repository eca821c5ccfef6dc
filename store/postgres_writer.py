"""Group commit on the event loop, for PostgreSQL.

The same batching as `writer.GroupCommitWriter` (every command waiting goes into one
transaction; each request is answered only after the COMMIT returned), without its thread:
deciding and encoding run on the event loop between requests, and the database is awaited
through an asynchronous psycopg connection, so no request ever waits for the GIL to come back
from a writer thread. Profiles showed that hand-over costing more CPU than the writing itself.
SQLite has no asynchronous driver and keeps the threaded writer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.persistence import OperationalError
from psycopg.rows import dict_row

from store import dedupe
from store.config import Settings, eventsourcing_env
from store.ledger import (
    BATCH_ATTEMPTS,
    Command,
    Fact,
    Ledger,
    Outcome,
    collected,
    outcomes,
)
from store.postgres import (
    COPY_TYPES,
    DEDUPE_COPY_TYPES,
    FailFastApplicationRecorder,
    copy_row,
)
from store.sqlite_writer import LRU

log = logging.getLogger("callback_ledger")


class LoopGroupCommit:
    def __init__(
        self,
        ledger: Ledger,
        settings: Settings,
        max_batch: int = 256,
        cache_size: int = 20_000,
    ) -> None:
        assert isinstance(ledger.recorder, FailFastApplicationRecorder)
        from service.metrics import group_commit  # once serve has set up metrics

        self._observe = group_commit
        self.ledger = ledger
        self.recorder = ledger.recorder
        self.max_batch = max_batch
        self.timeout_s = settings.db_timeout_s
        self.cache = LRU(cache_size)
        self.batches = 0
        self.commands = 0
        env = eventsourcing_env(settings.database_url, settings.db_timeout_s)
        self._connect: dict[str, Any] = {
            "host": env["POSTGRES_HOST"],
            "port": env["POSTGRES_PORT"],
            "dbname": env["POSTGRES_DBNAME"],
            "user": env["POSTGRES_USER"],
            "password": env["POSTGRES_PASSWORD"],
            "connect_timeout": env["POSTGRES_CONNECT_TIMEOUT"],
        }
        self._conn: psycopg.AsyncConnection[dict[str, Any]] | None = None
        self._pending: list[tuple[Command, asyncio.Future[Outcome]]] = []
        self._drain: asyncio.Task[None] | None = None

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
                results = await self._execute_many([command for command, _ in batch])
            except asyncio.CancelledError:
                for _, future in batch:
                    future.cancel()
                raise
            except Exception as exc:  # never leave a request waiting
                log.exception("group commit failed")
                results = [exc] * len(batch)
            self._observe(time.perf_counter() - started, results)
            self.batches += 1
            self.commands += len(batch)
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():  # its request went away
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    async def _execute_many(self, commands: list[Command]) -> list[Outcome | BaseException]:
        """As `Ledger.execute_many`: a conflicting batch is decided again on fresh streams; one
        that fails on a member, or keeps conflicting, is retried command by command."""
        for _ in range(BATCH_ATTEMPTS):
            try:
                async with asyncio.timeout(self.timeout_s):
                    return await self._commit_batch(commands)
            except psycopg.IntegrityError:
                continue
            except (psycopg.OperationalError, psycopg.InterfaceError, TimeoutError) as exc:
                # Unreachable, or its state unknown after a timeout: start a new connection next
                # time. A COMMIT whose answer was lost is safe to repeat: the retry is a duplicate.
                await self._discard_connection()
                unavailable = OperationalError(f"the event store is unreachable: {exc!r}")
                return [unavailable] * len(commands)
            except Exception as exc:
                if len(commands) == 1:
                    return [exc]
                break
        return [await asyncio.to_thread(self.ledger._execute_alone, c) for c in commands]

    async def _commit_batch(self, commands: list[Command]) -> list[Outcome | BaseException]:
        ledger = self.ledger
        conn = await self._connection()
        touched = ledger.cached(commands, self.cache)
        missing: set[UUID] = {c.aggregate_id for c in commands} - touched.keys()
        if missing:
            sql, params = ledger.events_query(missing)
            cursor = await conn.execute(sql, params)
            touched.update(ledger.rebuild(await cursor.fetchall()))
        recorded = await self._recorded(conn, ledger.to_look_up(commands, touched))
        planned = ledger.decide_all(commands, touched, recorded)
        processing = collected(touched.values())
        if processing.events:
            await self._insert(
                conn,
                [ledger.mapper.to_stored_event(e) for e in processing.events],
                dedupe.rows(processing.events),
            )
            if ledger.snapshots_due(processing):
                try:
                    await asyncio.to_thread(ledger._take_snapshots, processing)
                except Exception:  # committed already; a missing snapshot only slows a reload
                    log.exception("snapshot not taken")
        self.cache.update(touched)
        return outcomes(planned)

    async def _recorded(
        self, conn: psycopg.AsyncConnection[dict[str, Any]], facts: set[Fact]
    ) -> set[Fact]:
        """As `Ledger.recorded`, on this connection."""
        if not facts:
            return set()
        pairs = {(stream, dedupe.key_bytes(key)): (stream, key) for stream, key in facts}
        sql, params = self.recorder.recorded_query(list(pairs))
        cursor = await conn.execute(sql, params, prepare=False)  # see recorded_query
        return {pairs[r["originator_id"], bytes(r["dedupe_key"])] for r in await cursor.fetchall()}

    async def _insert(
        self,
        conn: psycopg.AsyncConnection[Any],
        stored: list[Any],
        keys: list[dedupe.Row],
    ) -> None:
        """The events and their dedupe keys in one transaction (see store.dedupe)."""
        begin, copy = self.recorder.insert_statements()
        async with conn.cursor() as cursor:
            try:
                await cursor.execute(begin)
                async with cursor.copy(copy) as rows:
                    rows.set_types(COPY_TYPES)
                    for event in stored:
                        await rows.write_row(copy_row(event))
                if keys:
                    async with cursor.copy(self.recorder.dedupe_copy_statement()) as rows:
                        rows.set_types(DEDUPE_COPY_TYPES)
                        for key in keys:
                            await rows.write_row(key)
                await cursor.execute("COMMIT")
            except BaseException:
                if not conn.closed:
                    with contextlib.suppress(Exception):
                        await cursor.execute("ROLLBACK")
                raise

    async def _connection(self) -> psycopg.AsyncConnection[dict[str, Any]]:
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
