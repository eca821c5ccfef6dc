"""Rebuilding a projection from the first event into a fresh generation of its tables, then
switching the views to it in one transaction, so queries keep answering during the rebuild.
The generation being built resumes after an interruption unless started fresh; the messages
projection can be split by stream among processes. `callback-ledger replay` drives it
(service/replay.py)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import suppress
from typing import NamedTuple

from projections.faults import clear_faults
from projections.log_reader import EventLog, LoggedEvent, UnsealedEvent
from projections.projector import Projector, drop_generation, point_views
from store.backend import Cursor, Database

SPLIT = "messages"  # the projection worth splitting: nearly every event is one of its


class Page(NamedTuple):
    after: int
    last: int
    events: list[LoggedEvent]


class ReadAhead:
    """Pages of the log from `after` on, read by a thread on its own connection, at most two
    pages ahead of the consumer, so PostgreSQL and Python work at the same time; iteration
    ends at the head."""

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


class Rebuild:
    """Fills the next generation of a projection from the first event while the live one keeps
    answering, then switches the views to it. Its position lives beside the live one in
    `ledger_projections` (building_generation, building_position), so it resumes."""

    def __init__(self, projector: Projector) -> None:
        self.projector = projector

    def start(self, name: str, fresh: bool = False) -> tuple[int, int]:
        """The generation being built and its position: a new one, or the interrupted one
        (unless `fresh`)."""
        projection = self.projector.projections[name]
        with self.projector.locked(name) as (cur, row):
            building = row["building_generation"]
            if building is not None and not fresh:
                return int(building), int(row["building_position"])
            cur.execute("DELETE FROM ledger_replay_parts WHERE name = ?", (name,))
            if building is not None:
                drop_generation(cur, projection, int(building))
            building = int(row["generation"]) + 1
            drop_generation(cur, projection, building)
            # Secondary indexes come at the switch: filling a table without them is faster.
            for statement in projection.schema(building):
                if not statement.startswith("CREATE INDEX"):
                    cur.execute(statement)
            cur.execute(
                "UPDATE ledger_projections SET building_generation = ?, building_position = 0 "
                "WHERE name = ?",
                (building, name),
            )
            return building, 0

    def steps(self, names: Sequence[str]) -> dict[str, int]:
        """One page of the log, read once, into every generation being built; their new
        positions."""
        return self.projector.apply_next_page(names, building=True)

    def build_all(self, names: Sequence[str], stop: int | None = None) -> Iterator[int]:
        """Fills the generations being built up to the head, page by page as `steps`;
        yields the lowest position after each page. The next page is read ahead (ReadAhead):
        it is the one the transaction would read, as the log only grows and ids become visible
        in order (the library inserts under a table lock)."""
        projector = self.projector
        after = min(projector.position(name, "building_position") for name in names)
        # With `stop` (PostgreSQL), up to that id and only the events of `names`, filtered in
        # the database: for projections whose events are few, built beside a split one.
        part = None if stop is None else (0, 1)
        size, topics = projector.page_size, projector.topics(names)
        with ReadAhead(projector.db, projector.log, after, size, topics, stop, part) as pages:
            for page in pages:
                yield min(projector.apply_next_page(names, building=True, page=page).values())

    def plan_parts(self, name: str, jobs: int) -> int | None:
        """How many parts the rebuild of `name` under way is split into: the number an
        interrupted split rebuild was started with (whatever `jobs`), else `jobs` if above 1
        and the rebuild has not started (its parts are then set up), else None: one process."""
        with self.projector.locked(name) as (cur, row):
            found = cur.execute(
                "SELECT MAX(parts) AS parts FROM ledger_replay_parts WHERE name = ?", (name,)
            ).fetchone()
            if found and found["parts"]:
                return int(found["parts"])
            if jobs < 2 or row["building_position"] != 0 or not cur.backend.several_writers:
                return None
            for part in range(jobs):
                cur.execute(
                    "INSERT INTO ledger_replay_parts (name, part, parts, position) "
                    "VALUES (?, ?, ?, 0)",
                    (name, part, jobs),
                )
            return jobs

    def build_part(self, name: str, part: int, parts: int, stop: int) -> Iterator[int]:
        """Fills part `part` of `parts` of the generation being built, up to notification id
        `stop`, one page per transaction with the part's own position; yields it. A stream's
        events are all in one part, so parts in separate processes never write the same row."""
        projector = self.projector
        projection = projector.projections[name]
        generation = projector.position(name, "building_generation")
        after = self._part_position(name, part)
        size = projector.page_size
        pages = ReadAhead(
            projector.db, projector.log, after, size, projection.topics, stop, (part, parts)
        )
        with pages:
            for page in pages:
                with projector.db.transaction() as cur:
                    position = self._part_position(name, part, cur)
                    if page.after == position:
                        last, events = page.last, page.events
                    else:  # another process moved this part: read from where it is
                        last, events = projector.log.part_page(
                            cur, position, size, projection.topics, stop, part, parts
                        )
                    if events:
                        projection.apply(cur, generation, events)
                    cur.execute(
                        "UPDATE ledger_replay_parts SET position = ? WHERE name = ? AND part = ?",
                        (max(last, position), name, part),
                    )
                yield max(last, position)

    def _part_position(self, name: str, part: int, cur: Cursor | None = None) -> int:
        sql = "SELECT position FROM ledger_replay_parts WHERE name = ? AND part = ?"
        if cur is not None:
            row = cur.execute(sql + " FOR UPDATE", (name, part)).fetchone()
        else:
            with self.projector.db.read() as reader:
                row = reader.execute(sql, (name, part)).fetchone()
        if row is None:
            raise LookupError(f"part {part} of the rebuild of {name!r} is not set up")
        return int(row["position"])

    def part_positions(self, name: str) -> list[int]:
        with self.projector.db.read() as cur:
            rows = cur.execute(
                "SELECT position FROM ledger_replay_parts WHERE name = ?", (name,)
            ).fetchall()
        return [int(row["position"]) for row in rows] or [0]

    def join_parts(self, name: str, stop: int) -> None:
        """Once every part has been built up to `stop`: the rebuild goes on from there as one."""
        with self.projector.locked(name) as (cur, _):
            cur.execute(
                "UPDATE ledger_projections SET building_position = ? WHERE name = ?", (stop, name)
            )
            cur.execute("DELETE FROM ledger_replay_parts WHERE name = ?", (name,))

    def finish(self, name: str) -> int:
        """Catches the new generation up to the head and switches the views to it, in one
        transaction holding the live follower off; then drops the old tables."""
        projector = self.projector
        projection = projector.projections[name]
        with projector.locked(name) as (cur, row):
            generation, position = int(row["building_generation"]), int(row["building_position"])
            while True:
                last, events = projector.log.page(
                    cur, position, projector.page_size, projection.topics
                )
                if events:
                    projection.apply(cur, generation, events)
                if last == position:
                    break
                position = last
            for statement in projection.schema(generation):
                if statement.startswith("CREATE INDEX"):
                    cur.execute(statement)
            old = int(row["generation"])
            cur.execute(
                "UPDATE ledger_projections SET generation = ?, position = ?, "
                "building_generation = NULL, building_position = NULL WHERE name = ?",
                (generation, position, name),
            )
            point_views(cur, projection, generation)
            # Rebuilt from the first event: whatever was missing or stuck is behind it now.
            clear_faults(cur, name)
        with projector.db.transaction() as cur:
            drop_generation(cur, projection, old)
        return position
