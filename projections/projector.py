"""Follows the event log into the read tables, one page per transaction, exactly once.

Each projection's position lives in `ledger_projections` and is moved in the same transaction
that writes the page's rows, under a row lock (PostgreSQL) or the write lock (SQLite), so two
followers never apply a page twice and a crash anywhere leaves rows and position agreeing.

Tables are versioned by generation (`message_status_g3`); the names users query are views over
the active generation. A rebuild fills the next generation from the first event while the
live one keeps answering, then switches the views in one transaction.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
import psycopg_pool

from projections import consent, messages, rules
from projections.log_reader import EventLog, LoggedEvent
from store.db import Cursor, Database, Row

log = logging.getLogger("callback_ledger")

POSITIONS_DDL = """CREATE TABLE IF NOT EXISTS ledger_projections (
    name TEXT PRIMARY KEY, generation INTEGER NOT NULL, position BIGINT NOT NULL,
    building_generation INTEGER, building_position BIGINT)"""
# A rebuild split across processes: each part's own position (see `build_part`).
PARTS_DDL = """CREATE TABLE IF NOT EXISTS ledger_replay_parts (
    name TEXT NOT NULL, part INTEGER NOT NULL, parts INTEGER NOT NULL, position BIGINT NOT NULL,
    PRIMARY KEY (name, part))"""


# A projection that cannot apply an event: which one, and why (see `Projector.catch_up`).
# kind "event": it cannot apply an event (cleared once it moves on); kind "replay": a table
# it gained in an upgrade holds nothing from before (cleared by `callback-ledger replay`).
FAULTS_DDL = """CREATE TABLE IF NOT EXISTS ledger_projection_faults (
    name TEXT NOT NULL, kind TEXT NOT NULL, position BIGINT NOT NULL, notification_id BIGINT,
    stream TEXT, event TEXT, error TEXT NOT NULL, since TEXT NOT NULL,
    PRIMARY KEY (name, kind))"""
EVENT, REPLAY = "event", "replay"


# SQLSTATE classes that say the server is unreachable, shutting down, out of resources, or
# that the transaction lost a race or waited too long: nothing about the event itself.
_TRANSIENT = ("08", "40", "53", "55", "57")


def unreachable(exc: BaseException) -> bool:
    """The store is down or busy: no fault of an event, so retried as it is."""
    if isinstance(exc, sqlite3.OperationalError):
        return not str(exc).startswith("no such")  # locked, I/O: yes; a missing table: no
    if isinstance(exc, psycopg.Error):
        # A connection failure has no SQLSTATE; "index row size exceeds maximum" (54000) is
        # an OperationalError too, but caused by the event.
        if exc.sqlstate is None:
            return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
        return exc.sqlstate[:2] in _TRANSIENT
    return isinstance(exc, psycopg_pool.PoolTimeout | OSError)


log = logging.getLogger("callback_ledger")


class ProjectionStuck(RuntimeError):
    """Projections that cannot apply an event of the log: they stay where they are (an event
    skipped would leave their rows wrong) until the cause is fixed."""

    def __init__(self, faults: dict[str, dict[str, Any]]) -> None:
        self.faults = faults
        super().__init__(
            "; ".join(f"{name}: {describe(fault)}" for name, fault in sorted(faults.items()))
        )


def summary(exc: BaseException) -> str:
    """An error in one line for /healthz and the log: the database's DETAIL lines (which can
    quote a row's values, a phone number among them) are left out."""
    lines = str(exc).splitlines()
    return f"{type(exc).__name__}: {(lines[0] if lines else '')[:300]}"


def describe(fault: dict[str, Any]) -> str:
    if fault.get("kind") == REPLAY:
        return str(fault["error"])
    where = (
        f"event {fault['notification_id']} ({fault['event']} on stream {fault['stream']})"
        if fault.get("notification_id") is not None
        else f"the events after {fault['position']}"
    )
    return f"cannot apply {where}: {fault['error']}"


class _Rollback(Exception):
    pass


def write_fault(cur: Cursor, name: str, fault: dict[str, Any]) -> None:
    cur.execute(
        "DELETE FROM ledger_projection_faults WHERE name = ? AND kind = ?", (name, fault["kind"])
    )
    cur.execute(
        "INSERT INTO ledger_projection_faults (name, kind, position, notification_id, stream, "
        "event, error, since) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            name,
            fault["kind"],
            fault["position"],
            fault.get("notification_id"),
            fault.get("stream"),
            fault.get("event"),
            fault["error"],
            fault["since"],
        ),
    )


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
                    last, events = read(cur, after)
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


@dataclass(frozen=True)
class Projection:
    name: str
    topics: frozenset[str]
    tables: tuple[str, ...]
    schema: Callable[[int], list[str]]
    apply: Callable[[Cursor, int, list[LoggedEvent]], None]
    # Columns added to a table since its first version: (table, column, SQL type). A database
    # from before gets them (and is told it needs a replay to fill them).
    added_columns: tuple[tuple[str, str, str], ...] = ()


def all_projections(
    keywords: rules.Keywords = rules.DEFAULT_KEYWORDS,
    next_actions: Mapping[str, str] | None = None,
) -> dict[str, Projection]:
    return {
        messages.NAME: Projection(
            messages.NAME,
            messages.TOPICS,
            messages.TABLES,
            messages.schema,
            lambda cur, g, events: messages.apply(cur, g, events, next_actions),
            messages.ADDED_COLUMNS,
        ),
        consent.NAME: Projection(
            consent.NAME,
            consent.TOPICS,
            consent.TABLES,
            consent.schema,
            lambda cur, g, events: consent.apply(cur, g, events, keywords),
        ),
    }


class Projector:
    def __init__(
        self,
        db: Database,
        events_table: str,
        projections: dict[str, Projection],
        page_size: int = 1000,
    ) -> None:
        self.db = db
        self.log = EventLog(events_table, db.backend)
        self.projections = projections
        self.page_size = page_size

    # ---- set-up ---------------------------------------------------------------------------

    def setup(self) -> None:
        """Creates the positions table and generation 1 of any projection not yet there, and
        any table a projection has gained since its generation was built."""
        with self.db.transaction() as cur:
            # Two processes starting together must not both create generation 1.
            cur.backend.setup_lock(cur, 4711001)
            cur.execute(POSITIONS_DDL)
            cur.execute(PARTS_DDL)
            cur.execute(FAULTS_DDL)
            for projection in self.projections.values():
                row = cur.execute(
                    "SELECT generation, building_generation FROM ledger_projections WHERE name = ?",
                    (projection.name,),
                ).fetchone()
                if row is not None:
                    self._add_missing_tables(cur, projection, row)
                    continue
                for statement in projection.schema(1):
                    cur.execute(statement)
                cur.execute(
                    "INSERT INTO ledger_projections (name, generation, position) VALUES (?, 1, 0)",
                    (projection.name,),
                )
                self._point_views(cur, projection, 1)

    @staticmethod
    def _add_missing_tables(cur: Cursor, projection: Projection, row: Row) -> None:
        """A database set up by an earlier version lacks the tables added to a projection
        since (consent_review, say). Each is created empty, with its view, in the active
        generation, and in a generation being built (without its indexes: those come at the
        switch), so following and an interrupted replay go on; likewise each column added to
        a table since (`Projection.added_columns`). Only a replay fills them with what the log
        held before."""
        generations = [(int(row["generation"]), True)]
        building = row["building_generation"]
        if building is not None and _lacks(cur, projection, int(building)):
            # Its rows up to its position were built without what this version adds (and
            # resuming would switch to it and clear the mark): the next replay starts over.
            cur.execute("DELETE FROM ledger_replay_parts WHERE name = ?", (projection.name,))
            for table in projection.tables:
                cur.execute(f"DROP TABLE IF EXISTS {table}_g{int(building)}")
            cur.execute(
                "UPDATE ledger_projections SET building_generation = NULL WHERE name = ?",
                (projection.name,),
            )
            log.warning(
                "projection %s: an interrupted rebuild started by an earlier version was "
                "discarded; the next replay starts from the first event",
                projection.name,
            )
        elif building is not None:
            generations.append((int(building), False))
        for generation, active in generations:
            statements = projection.schema(generation)
            for table in projection.tables:
                name = f"{table}_g{generation}"
                if _table_exists(cur, name):
                    continue
                for statement in statements:
                    if f"TABLE {name} (" in statement or (active and f"ON {name} (" in statement):
                        cur.execute(statement)
                if active:
                    _point_view(cur, table, name)
                    # Until the replay its answers may be wrong (contact_identities decides
                    # which numbers a contact-wide opt-out covers): said so, not guessed.
                    why = (
                        f"{table} is new in this version and holds nothing from before it: run "
                        f"`callback-ledger replay --projection {projection.name}`"
                    )
                    _needs_replay(cur, projection.name, int(row["generation"]), why)
            for table, column, sql_type in projection.added_columns:
                name = f"{table}_g{generation}"
                if not _table_exists(cur, name) or column in _columns(cur, name):
                    continue
                cur.execute(f"ALTER TABLE {name} ADD COLUMN {column} {sql_type}")
                if active:
                    _point_view(cur, table, name)
                    why = (
                        f"{table}.{column} is new in this version and empty for what came "
                        f"before it: run `callback-ledger replay --projection {projection.name}`"
                    )
                    _needs_replay(cur, projection.name, int(row["generation"]), why)
            if active:
                # Indexes changed since (the metadata prefix): made as this version makes them.
                for statement in statements:
                    if statement.startswith("DROP INDEX"):
                        cur.execute(statement)
                    elif statement.startswith("CREATE INDEX"):
                        cur.execute(statement.replace("CREATE INDEX", "CREATE INDEX IF NOT EXISTS"))

    @staticmethod
    def _point_views(cur: Cursor, projection: Projection, generation: int) -> None:
        for table in projection.tables:
            _point_view(cur, table, f"{table}_g{generation}")

    @contextmanager
    def _locked(self, name: str) -> Iterator[tuple[Cursor, Row]]:
        with self.db.transaction() as cur:
            yield cur, self._lock_row(cur, name)

    @staticmethod
    def _lock_row(cur: Cursor, name: str) -> Row:
        lock = cur.backend.for_update
        row = cur.execute(f"SELECT * FROM ledger_projections WHERE name = ?{lock}", (name,))
        found = row.fetchone()
        if found is None:
            raise LookupError(f"projection {name!r} is not set up")
        return found

    def _apply_page(
        self,
        cur: Cursor,
        projection: Projection,
        generation: int,
        after: int,
        stop: int | None = None,
    ) -> int:
        """Applies the page after `after` and returns its last notification id (or `after`)."""
        last, events = self.log.page(cur, after, self.page_size, projection.topics, stop)
        if events:
            projection.apply(cur, generation, events)
        return last

    # ---- live -----------------------------------------------------------------------------

    def step(self, name: str) -> int:
        """One page into the active generation; 1 if it moved, else 0."""
        before = self._position(name)
        return int(self._steps([name], building=False)[name] != before)

    def catch_up(self) -> int:
        """Follows the log with every projection (see `_follow`); pages applied.

        A projection that fails on an event stops there and the others go on: the failure is
        recorded in `ledger_projection_faults` (the event, the error), logged, and raised as
        ProjectionStuck; /healthz reports it and the pre-send check refuses to answer from it.
        The next call tries again, and clears the record once the projection moves on."""
        names = list(self.projections)
        try:
            pages = self._follow(names)
        except Exception as exc:
            if unreachable(exc):
                raise
            pages, faults = 0, {}
            for name in names:
                try:
                    pages += self._follow([name])
                except Exception as error:
                    if unreachable(error):
                        raise
                    faults[name] = self._record_fault(name, error)
            self._clear_faults([name for name in names if name not in faults])
            if faults:
                raise ProjectionStuck(faults) from None
        self._clear_faults(names)
        return pages

    def _follow(self, names: list[str]) -> int:
        """Follows the log with `names`, one page (read once for all) per transaction, up to
        a page that comes back short: everything committed before the call is then applied.
        What arrives meanwhile waits for the next call: chasing it under load applies many
        more pages of a few events each, for more CPU. Pages applied."""
        pages = 0
        positions = {name: self._position(name) for name in names}
        while (moved := self._steps(names, building=False)) != positions:
            pages += 1
            # Ids can have gaps (a rolled-back insert), so a full page may span more ids.
            advanced = min(moved.values()) - min(positions.values())
            positions = moved
            if advanced < self.page_size:
                break
        return pages

    def _position(self, name: str, column: str = "position") -> int:
        with self.db.read() as cur:
            row = cur.execute(
                f"SELECT {column} AS position FROM ledger_projections WHERE name = ?", (name,)
            ).fetchone()
        if row is None:
            raise LookupError(f"projection {name!r} is not set up")
        return int(row["position"] or 0)

    def _topics(self, names: Sequence[str]) -> frozenset[str]:
        return frozenset().union(*(self.projections[name].topics for name in names))

    def _steps(
        self, names: Sequence[str], *, building: bool, page: Page | None = None
    ) -> dict[str, int]:
        """One page of the log, read once, applied to each named projection's active (or
        building) generation from its own position, with the positions moved in the same
        transaction; the new positions. A `page` read ahead is used when it starts where the
        positions are, else the page is read here."""
        generation_column = "building_generation" if building else "generation"
        position_column = "building_position" if building else "position"
        started = time.perf_counter()
        with self.db.transaction() as cur:
            # Rows locked in a fixed order, so two followers or replays never deadlock.
            rows = {name: self._lock_row(cur, name) for name in sorted(names)}
            start = min(int(row[position_column]) for row in rows.values())
            if page is not None and page.after == start:
                last, events = page.last, page.events
            else:
                last, events = self.log.page(cur, start, self.page_size, self._topics(names))
            positions = {}
            for name, row in rows.items():
                projection, position = self.projections[name], int(row[position_column])
                mine = [
                    e
                    for e in events
                    if e.notification_id > position and e.topic in projection.topics
                ]
                if mine:
                    projection.apply(cur, int(row[generation_column]), mine)
                positions[name] = max(position, last)
                if positions[name] != position:
                    cur.execute(
                        f"UPDATE ledger_projections SET {position_column} = ? WHERE name = ?",
                        (positions[name], name),
                    )
        if last != start and log.isEnabledFor(logging.DEBUG):  # a page read, not an empty poll
            fields = {"projections": ",".join(rows), "after": start, "last": last}
            fields |= {"events": len(events), "building": building}
            fields["duration_ms"] = round((time.perf_counter() - started) * 1000, 3)
            log.debug("projection page", extra={"fields": fields})
        return positions

    def positions(self) -> dict[str, dict[str, Any]]:
        with self.db.read() as cur:
            head = self.log.head(cur)
            rows = cur.execute("SELECT * FROM ledger_projections").fetchall()
            faults = self._faults(cur)
        found: dict[str, dict[str, Any]] = {}
        for row in rows:
            if row["name"] not in self.projections:
                continue
            found[row["name"]] = {
                "generation": int(row["generation"]),
                "position": int(row["position"]),
                "lag": head - int(row["position"]),
                "rebuilding": row["building_generation"] is not None,
            }
            if row["name"] in faults:
                found[row["name"]]["fault"] = faults[row["name"]]
        return found

    # ---- faults ---------------------------------------------------------------------------

    @staticmethod
    def _faults(cur: Cursor, kind: str | None = None) -> dict[str, dict[str, Any]]:
        """A fault per projection that has one: cannot apply an event first, else needs a
        replay."""
        rows = cur.execute("SELECT * FROM ledger_projection_faults ORDER BY name, kind").fetchall()
        found: dict[str, dict[str, Any]] = {}
        for row in rows:
            if kind is not None and row["kind"] != kind:
                continue
            found.setdefault(
                row["name"],
                {
                    "kind": row["kind"],
                    "position": int(row["position"]),
                    "notification_id": row["notification_id"],
                    "stream": row["stream"],
                    "event": row["event"],
                    "error": row["error"],
                    "since": row["since"],
                },
            )
        return found

    def faults(self) -> dict[str, dict[str, Any]]:
        """The projections that cannot be trusted now, and why."""
        with self.db.read() as cur:
            return self._faults(cur)

    def head(self) -> int:
        with self.db.read() as cur:
            return self.log.head(cur)

    def freshness(self, name: str, upto: int) -> tuple[dict[str, Any] | None, bool]:
        """`name`'s fault if it has one, and whether the log holds events of its kinds up to
        notification `upto` that it has not applied yet."""
        projection = self.projections[name]
        with self.db.read() as cur:
            fault = self._faults(cur).get(name)
            row = cur.execute(
                "SELECT position FROM ledger_projections WHERE name = ?", (name,)
            ).fetchone()
            if row is None:
                raise LookupError(f"projection {name!r} is not set up")
            position = int(row["position"])
            pending = position < upto and self.log.has_events_after(
                cur, position, projection.topics, upto
            )
            return fault, pending

    def _clear_faults(self, names: list[str]) -> None:
        with self.db.read() as cur:
            stale = set(self._faults(cur, EVENT)) & set(names)
        if stale:
            with self.db.transaction() as cur:
                for name in stale:
                    cur.execute(
                        "DELETE FROM ledger_projection_faults WHERE name = ? AND kind = ?",
                        (name, EVENT),
                    )
            log.warning("projection(s) %s moved on: no longer stuck", ", ".join(sorted(stale)))

    def _record_fault(self, name: str, exc: Exception) -> dict[str, Any]:
        """Finds the event `name` cannot apply (each event of the page alone, rolled back),
        records it and logs it loudly; the record."""
        position = self._position(name)
        with self.db.read() as cur:
            known = self._faults(cur, EVENT).get(name)
        if known is not None and known["position"] == position:
            return known  # already found and logged; still stuck
        try:
            culprit = self.locate_fault(name, position, building=False)
        except Exception as failure:  # the page cannot even be read (decoded)
            if unreachable(failure):
                raise
            culprit = None
        event, error = culprit if culprit else (None, exc)
        fault = {
            "kind": EVENT,
            "position": position,
            "notification_id": event.notification_id if event else None,
            "stream": event.originator_id if event else None,
            "event": event.topic.rpartition(":")[2] if event else None,
            "error": summary(error),
            "since": datetime.now(UTC).isoformat(),
        }
        self._write_fault(name, fault)
        log.error(
            "PROJECTION %s IS STUCK: it %s. It retries, and /healthz answers 503 until the "
            "cause is fixed",
            name,
            describe(fault),
        )
        return fault

    def _write_fault(self, name: str, fault: dict[str, Any]) -> None:
        with self.db.transaction() as cur:
            write_fault(cur, name, fault)

    def locate_fault(
        self, name: str, position: int, *, building: bool
    ) -> tuple[LoggedEvent, Exception] | None:
        """The first event after `position` that `name` cannot apply on its own, and the
        error; None when each applies (the page failed as a whole). Nothing is kept."""
        projection = self.projections[name]
        column = "building_generation" if building else "generation"
        generation = self._position(name, column)
        with self.db.read() as cur:
            _, events = self.log.page(cur, position, self.page_size, projection.topics)
        for event in events:
            try:
                with self.db.transaction() as cur:
                    projection.apply(cur, generation, [event])
                    raise _Rollback
            except _Rollback:
                continue
            except Exception as error:
                if unreachable(error):
                    raise
                return event, error
        return None

    def explain(self, names: Sequence[str], exc: Exception, *, building: bool) -> str:
        """In words, which event which of `names` cannot apply (after `exc` stopped them)."""
        column = "building_position" if building else "position"
        found = []
        for name in names:
            culprit = self.locate_fault(name, self._position(name, column), building=building)
            if culprit is not None:
                event, error = culprit
                fault = {
                    "notification_id": event.notification_id,
                    "event": event.topic.rpartition(":")[2],
                    "stream": event.originator_id,
                    "error": summary(error),
                }
                found.append(f"{name} {describe(fault)}")
        return "; ".join(found) or summary(exc)

    # ---- rebuild --------------------------------------------------------------------------

    def start_rebuild(self, name: str, fresh: bool = False) -> tuple[int, int]:
        """The generation being built and its position: a new one, or the interrupted one
        (unless `fresh`), so an interrupted replay resumes where it stopped."""
        projection = self.projections[name]
        with self._locked(name) as (cur, row):
            building = row["building_generation"]
            if building is not None and not fresh:
                return int(building), int(row["building_position"])
            cur.execute("DELETE FROM ledger_replay_parts WHERE name = ?", (name,))
            if building is not None:
                self._drop_generation(cur, projection, int(building))
            building = int(row["generation"]) + 1
            self._drop_generation(cur, projection, building)
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

    def build_step(self, name: str) -> int:
        """One page into the generation being built; its new position."""
        return self.build_steps([name])[name]

    def build_steps(self, names: Sequence[str]) -> dict[str, int]:
        """One page of the log, read once, into every generation being built (a replay of
        all projections is one pass over the log); their new positions."""
        return self._steps(names, building=True)

    def build_all(self, names: Sequence[str], stop: int | None = None) -> Iterator[int]:
        """Fills the generations being built up to the head, page by page as `build_steps`;
        yields the lowest position after each page. The next page is read and decoded on a
        second connection, in a thread, while this one is written, so PostgreSQL and Python
        work at the same time. That page is the one the transaction would read: the log only
        grows, and ids become visible in order (the library inserts under a table lock)."""
        after = min(self._position(name, "building_position") for name in names)
        # With `stop` (PostgreSQL), up to that id and only the events of `names`, filtered in the
        # database: for projections whose events are few, built beside a split one.
        part = None if stop is None else (0, 1)
        pages = ReadAhead(self.db, self.log, after, self.page_size, self._topics(names), stop, part)
        with pages:
            for page in pages:
                yield min(self._steps(names, building=True, page=page).values())

    def plan_parts(self, name: str, jobs: int) -> int | None:
        """How many parts the rebuild of `name` under way is split into: the number an
        interrupted split rebuild was started with (it resumes as it was split, whatever
        `jobs`), else `jobs` if above 1 and the rebuild has not started (its parts are then
        set up at its position), else None: one process."""
        with self._locked(name) as (cur, row):
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
        events are all in one part, so parts in separate processes never write the same row
        (PostgreSQL only; see `plan_parts`, `join_parts`)."""
        projection = self.projections[name]
        generation = self._position(name, "building_generation")
        after = self._part_position(name, part)
        pages = ReadAhead(
            self.db, self.log, after, self.page_size, projection.topics, stop, (part, parts)
        )
        with pages:
            for page in pages:
                with self.db.transaction() as cur:
                    position = self._part_position(name, part, cur)
                    if page.after == position:
                        last, events = page.last, page.events
                    else:  # another process moved this part: read from where it is
                        last, events = self.log.part_page(
                            cur, position, self.page_size, projection.topics, stop, part, parts
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
            with self.db.read() as reader:
                row = reader.execute(sql, (name, part)).fetchone()
        if row is None:
            raise LookupError(f"part {part} of the rebuild of {name!r} is not set up")
        return int(row["position"])

    def part_positions(self, name: str) -> list[int]:
        with self.db.read() as cur:
            rows = cur.execute(
                "SELECT position FROM ledger_replay_parts WHERE name = ?", (name,)
            ).fetchall()
        return [int(row["position"]) for row in rows] or [0]

    def join_parts(self, name: str, stop: int) -> None:
        """Once every part has been built up to `stop`: the rebuild of `name` goes on from
        `stop` as one (`finish_rebuild`)."""
        with self._locked(name) as (cur, _):
            cur.execute(
                "UPDATE ledger_projections SET building_position = ? WHERE name = ?", (stop, name)
            )
            cur.execute("DELETE FROM ledger_replay_parts WHERE name = ?", (name,))

    def finish_rebuild(self, name: str) -> int:
        """Catches the new generation up to the head and switches the views to it, in one
        transaction holding the live follower off; then drops the old tables."""
        projection = self.projections[name]
        with self._locked(name) as (cur, row):
            generation, position = int(row["building_generation"]), int(row["building_position"])
            while (after := self._apply_page(cur, projection, generation, position)) != position:
                position = after
            for statement in projection.schema(generation):
                if statement.startswith("CREATE INDEX"):
                    cur.execute(statement)
            old = int(row["generation"])
            cur.execute(
                "UPDATE ledger_projections SET generation = ?, position = ?, "
                "building_generation = NULL, building_position = NULL WHERE name = ?",
                (generation, position, name),
            )
            self._point_views(cur, projection, generation)
            # Rebuilt from the first event: whatever was missing or stuck is behind it now.
            cur.execute("DELETE FROM ledger_projection_faults WHERE name = ?", (name,))
        with self.db.transaction() as cur:
            self._drop_generation(cur, projection, old)
        return position

    @staticmethod
    def _drop_generation(cur: Cursor, projection: Projection, generation: int) -> None:
        for table in projection.tables:
            cur.execute(f"DROP TABLE IF EXISTS {table}_g{generation}")


def _point_view(cur: Cursor, view: str, table: str) -> None:
    # Made again, not altered: PostgreSQL fixes a view's columns when it is made.
    cur.execute(f"DROP VIEW IF EXISTS {view}")
    cur.execute(f"CREATE VIEW {view} AS SELECT * FROM {table}")


def _needs_replay(cur: Cursor, name: str, generation: int, why: str) -> None:
    """Marks a projection as answering without what an earlier version never recorded, until
    a replay rebuilds it (the mark goes with the rebuild)."""
    fault = {"kind": REPLAY, "position": generation, "error": why}
    write_fault(cur, name, {**fault, "since": datetime.now(UTC).isoformat()})
    log.error("projection %s needs a replay: %s", name, why)


def _lacks(cur: Cursor, projection: Projection, generation: int) -> bool:
    """Whether a generation lacks a table or a column this version's projection has."""
    for table in projection.tables:
        if not _table_exists(cur, f"{table}_g{generation}"):
            return True
    return any(
        _table_exists(cur, f"{table}_g{generation}")
        and column not in _columns(cur, f"{table}_g{generation}")
        for table, column, _ in projection.added_columns
    )


def _columns(cur: Cursor, name: str) -> set[str]:
    return cur.backend.columns(cur, name)


def _table_exists(cur: Cursor, name: str) -> bool:
    return cur.backend.table_exists(cur, name)
