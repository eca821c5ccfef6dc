"""Group commit: one writer thread gathers the commands of concurrent requests and commits
them in one transaction; each request is answered only after that commit.

Batching is natural: while one batch commits, the next requests queue, and the next batch
takes all of them (up to `max_batch`). A lone request is committed at once, so batching adds
no latency when the service is quiet."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass
from uuid import UUID

from eventsourcing.domain import Aggregate

from store.ledger import Command, Ledger, Outcome

log = logging.getLogger("callback_ledger")


@dataclass
class _Job:
    command: Command
    future: Future[Outcome] | asyncio.Future[Outcome]
    loop: asyncio.AbstractEventLoop | None = None


class LRU(OrderedDict[UUID, Aggregate]):
    """The aggregates as last committed by this process, most recent last."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def __setitem__(self, key: UUID, aggregate: Aggregate) -> None:
        super().__setitem__(key, aggregate)
        self.move_to_end(key)
        if len(self) > self.size:
            self.popitem(last=False)


class GroupCommitWriter:
    def __init__(self, ledger: Ledger, max_batch: int = 256, cache_size: int = 20_000) -> None:
        from service.metrics import group_commit  # once serve has set up metrics

        self.ledger = ledger
        self.max_batch = max_batch
        self.cache = LRU(cache_size)
        self.batches = 0
        self.commands = 0
        self._observe = group_commit
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
        self._thread.start()

    def submit(self, command: Command) -> Future[Outcome]:
        """For callers in threads."""
        future: Future[Outcome] = Future()
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
            results = self.ledger.execute_many([job.command for job in batch], self.cache)
        except BaseException as exc:  # never leave a request waiting
            log.exception("group commit failed")
            results = [exc] * len(batch)
        self._observe(time.perf_counter() - started, results)
        self.batches += 1
        self.commands += len(batch)
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job, Outcome | BaseException]]] = {}
        for job, result in zip(batch, results, strict=True):
            if job.loop is None:
                _settle([(job, result)])
            else:
                by_loop.setdefault(job.loop, []).append((job, result))
        for loop, settled in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop has closed: nobody waits
                loop.call_soon_threadsafe(_settle, settled)


def _settle(settled: list[tuple[_Job, Outcome | BaseException]]) -> None:
    for job, result in settled:
        if job.future.done():  # an asyncio future cancelled by its request
            continue
        if isinstance(result, BaseException):
            job.future.set_exception(result)
        else:
            job.future.set_result(result)
