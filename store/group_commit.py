"""Group commit: the commands of concurrent requests committed in ONE transaction, each request
answered only after that commit. While one batch commits the next requests queue; a lone
request is committed at once.

The part both databases share: deciding a batch (commands for one stream applied to one
aggregate in order), the retries, the aggregate cache, settling the futures. The database is
asked for as effects (`Load`, `Lookup`, `Write`, ...) that a driver performs: store.sqlite in
a writer thread, store.postgres on the event loop; `run` performs them here and now."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections import OrderedDict
from collections.abc import Callable, Generator, Iterable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError

from store.backend import store_unavailable
from store.commands import (
    Command,
    Fact,
    Outcome,
    decide_all,
    outcomes,
    parts,
    take_cached,
    to_look_up,
)

if TYPE_CHECKING:
    from store.ledger import Ledger

log = logging.getLogger("callback_ledger")

BATCH_ATTEMPTS = 3

Result = Outcome | BaseException
# Told of every batch's seconds and results (service.metrics.group_commit); must not raise.
Observer = Callable[[float, Sequence[Result]], None]


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


@dataclass(frozen=True)
class Attempt:
    """A new attempt at the batch starts (its time limit starts again). Replies None."""


@dataclass(frozen=True)
class Load:
    """The stored rows of these streams (Ledger.events_query). Replies the rows."""

    ids: set[UUID]


@dataclass(frozen=True)
class Lookup:
    """Which of these facts the dedupe table holds. Replies a set of them."""

    facts: set[Fact]


@dataclass(frozen=True)
class Write:
    """The pending events of these aggregates in one transaction. Replies None; raises the
    library's IntegrityError on a conflict, its OperationalError when unreachable."""

    aggregates: list[Aggregate]


@dataclass(frozen=True)
class Alone:
    """Each command in a transaction of its own. Replies their results, in order."""

    commands: list[Command]


Effect = Attempt | Load | Lookup | Write | Alone


class Steps:
    """One batch being committed: each `advance` (with the last effect's reply or exception)
    gives the next effect to perform, None once done; then `results`."""

    def __init__(self, steps: Generator[Effect, Any, list[Result]]) -> None:
        self._steps = steps
        self.results: list[Result] = []

    def advance(self, reply: Any = None, error: Exception | None = None) -> Effect | None:
        try:
            if error is not None:
                return self._steps.throw(error)
            return self._steps.send(reply)
        except StopIteration as done:
            self.results = done.value
            return None


class Writer(Protocol):
    """What the service holds: a group commit it awaits from its event loop."""

    batches: int
    commands: int

    async def commit(self, command: Command) -> Outcome: ...

    async def aclose(self) -> None: ...

    def close(self) -> None: ...


class GroupCommit:
    """The batch logic and the state both drivers keep: the cache and the counters."""

    def __init__(
        self,
        ledger: Ledger,
        max_batch: int = 256,
        cache_size: int = 20_000,
        observe: Observer | None = None,
        cache: MutableMapping[UUID, Aggregate] | None = None,
    ) -> None:
        self.ledger = ledger
        self.max_batch = max_batch
        self.cache: MutableMapping[UUID, Aggregate] = LRU(cache_size) if cache is None else cache
        self.batches = 0
        self.commands = 0
        self._observe = observe

    def steps(self, commands: list[Command]) -> Steps:
        return Steps(self._batch(commands))

    def _batch(self, commands: list[Command]) -> Generator[Effect, Any, list[Result]]:
        """All commands' events in ONE transaction. A conflicting batch is decided again on
        freshly loaded streams; one that fails on a member, or keeps conflicting, is retried
        command by command, so the others still commit."""
        for _ in range(BATCH_ATTEMPTS):
            try:
                return (yield from self._attempt(commands))
            except IntegrityError:
                continue  # the streams it touched left the cache: they are reloaded
            except Exception as exc:
                if store_unavailable(self.ledger.backend, exc):
                    # Retrying each alone would only multiply the wait.
                    return [exc] * len(commands)
                if len(commands) == 1:
                    return [exc]
                break
        alone: list[Result] = yield Alone(commands)
        return alone

    def _attempt(self, commands: list[Command]) -> Generator[Effect, Any, list[Result]]:
        """A stale cached aggregate can only cause a conflict, never a wrong decision: committed
        events are never removed."""
        yield Attempt()
        touched = take_cached(commands, self.cache)
        missing = {c.aggregate_id for c in parts(commands)} - touched.keys()
        if missing:
            touched.update(self.ledger.rebuild((yield Load(missing))))
        facts = to_look_up(commands, touched)
        recorded: set[Fact] = (yield Lookup(facts)) if facts else set()
        planned = decide_all(commands, touched, recorded)
        dirty = [a for a in touched.values() if a.pending_events]
        if dirty:
            yield Write(dirty)
        self.cache.update(touched)
        return outcomes(planned)

    def done(self, seconds: float, results: Sequence[Result]) -> None:
        if self._observe is not None:
            self._observe(seconds, results)
        self.batches += 1
        self.commands += len(results)

    def close(self) -> None:
        return None


def execute_alone(ledger: Ledger, command: Command) -> Result:
    try:
        return ledger.execute(command)
    except Exception as exc:
        return exc


def perform(ledger: Ledger, effect: Effect) -> Any:
    if isinstance(effect, Load):
        return ledger.stored_rows(effect.ids)
    if isinstance(effect, Lookup):
        return ledger.recorded(effect.facts)
    if isinstance(effect, Write):
        ledger.save(*effect.aggregates)
    elif isinstance(effect, Alone):
        return [execute_alone(ledger, c) for c in effect.commands]
    return None


def run(core: GroupCommit, commands: list[Command]) -> list[Result]:
    steps = core.steps(commands)
    effect = steps.advance()
    while effect is not None:
        try:
            reply = perform(core.ledger, effect)
        except Exception as exc:
            effect = steps.advance(error=exc)
        else:
            effect = steps.advance(reply)
    return steps.results


Future = concurrent.futures.Future[Outcome] | asyncio.Future[Outcome]


def settle(settled: Iterable[tuple[Future, Result]]) -> None:
    for future, result in settled:
        if future.done():  # an asyncio future cancelled by its request
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
