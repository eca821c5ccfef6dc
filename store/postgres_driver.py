"""The group commit's driver for PostgreSQL, on the event loop.

The same batches as the SQLite driver (store.group_commit), without its thread: deciding and
encoding run on the event loop between requests, and the database is awaited through an
asynchronous psycopg connection, so no request ever waits for the GIL to come back from a
writer thread (profiles showed that hand-over costing more CPU than the writing itself)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

import psycopg
from eventsourcing.persistence import IntegrityError, OperationalError
from psycopg.rows import dict_row

from store import dedupe
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
from store.postgres import CopyInsert, FailFastApplicationRecorder
from store.vault import Vault

if TYPE_CHECKING:
    from eventsourcing.domain import Aggregate

    from store.ledger import Ledger
    from store.postgres_backend import PostgresBackend

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
        assert isinstance(ledger.recorder, FailFastApplicationRecorder)
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
    """The recorder's insert (store.postgres.CopyInsert), on an asynchronous connection."""
    async with conn.cursor() as cursor:
        try:
            await cursor.execute(insert.begin)
            for statement, types, rows in insert.copies:
                async with cursor.copy(statement) as copy:
                    copy.set_types(types)
                    for row in rows:
                        await copy.write_row(row)
            for statement, params in insert.after:
                await cursor.execute(statement, params)
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
