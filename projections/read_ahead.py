"""Pages of the log read ahead on a second connection, in a thread, while the consumer writes:
PostgreSQL and Python then work at the same time (see replay.Rebuild.build_all)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass

from projections.log_reader import EventLog, LoggedEvent, UnsealedEvent
from store.backend import Cursor, Database


@dataclass(frozen=True)
class Page:
    after: int
    last: int
    events: list[LoggedEvent]


class ReadAhead:
    """Pages of the log from `after` on, read by a thread on its own connection, at most two
    pages ahead of the consumer; iteration ends at the head."""

    def __init__(
        self,
        db: Database,
        log: EventLog,
        after: int,
        size: int,
        topics: frozenset[str],
        stop: int | None = None,
        part: tuple[int, int] | None = None,
    ) -> None:
        self._pages: queue.Queue[Page | BaseException] = queue.Queue(maxsize=2)
        self._stop = threading.Event()

        def read(cur: Cursor, after: int) -> tuple[int, list[LoggedEvent]]:
            if part is None:
                return log.page(cur, after, size, topics, stop)
            assert stop is not None
            return log.part_page(cur, after, size, topics, stop, *part)

        self._thread = threading.Thread(
            target=self._read, args=(db, read, after), name="ledger-read-ahead", daemon=True
        )

    def _read(
        self,
        db: Database,
        read: Callable[[Cursor, int], tuple[int, list[LoggedEvent]]],
        after: int,
    ) -> None:
        try:
            while not self._stop.is_set():
                with db.read() as cur:
                    try:
                        last, events = read(cur, after)
                    except UnsealedEvent as found:
                        # The page up to it is applied, then the consumer raises.
                        if found.before[0] != after:
                            self._pages.put(Page(after, *found.before))
                        raise
                self._pages.put(Page(after, last, events))
                if last == after:
                    return
                after = last
        except BaseException as error:  # handed to the consumer, which raises it
            self._pages.put(error)

    def __enter__(self) -> ReadAhead:
        self._thread.start()
        return self

    def __iter__(self) -> Iterator[Page]:
        while True:
            page = self._pages.get()
            if isinstance(page, BaseException):
                raise page
            if page.last == page.after:
                return
            yield page

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        while self._thread.is_alive():  # unblock a reader waiting to put
            with suppress(queue.Empty):
                self._pages.get_nowait()
            self._thread.join(0.05)
