"""The group commit's driver for SQLite: one writer thread gathers the commands of concurrent
requests and commits each batch (store.group_commit) through the library's connections.
SQLite has no asynchronous driver."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from concurrent.futures import Future as ThreadFuture
from dataclasses import dataclass
from typing import TYPE_CHECKING

from store.commands import Command, Outcome
from store.group_commit import Future, GroupCommit, Observer, Result, run, settle

if TYPE_CHECKING:
    from store.ledger import Ledger

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
        """For callers in an event loop: the whole batch is settled with one wake-up of the
        loop, instead of one thread-safe call per request."""
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
