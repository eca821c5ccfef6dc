"""Follows the event log into the read tables, one page per transaction, exactly once.

Each projection's position lives in `ledger_projections` and is moved in the same transaction
that writes the page's rows, under a row lock (PostgreSQL) or the write lock (SQLite), so two
followers never apply a page twice and a crash anywhere leaves rows and position agreeing.

Tables are versioned by generation (`message_status_g3`); the names users query are views over
the active generation. A rebuild into the next generation is rebuild.py's."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from projections import callbacks, consent, messages, rules
from projections.faults import (
    EVENT,
    FAULTS_DDL,
    Fault,
    ProjectionStuck,
    clear_faults,
    describe,
    now,
    read_faults,
    summary,
    write_fault,
)
from projections.log_reader import EventLog, LoggedEvent, UnsealedEvent
from store.backend import Cursor, Database, Row, store_unavailable
from store.vault import Vault, plaintext

__all__ = ["Projection", "ProjectionStuck", "Projector", "all_projections"]

log = logging.getLogger("callback_ledger")

POSITIONS_DDL = """CREATE TABLE IF NOT EXISTS ledger_projections (
    name TEXT PRIMARY KEY, generation INTEGER NOT NULL, position BIGINT NOT NULL,
    building_generation INTEGER, building_position BIGINT)"""
# A rebuild split across processes: each part's own position (see Rebuild.build_part).
PARTS_DDL = """CREATE TABLE IF NOT EXISTS ledger_replay_parts (
    name TEXT NOT NULL, part INTEGER NOT NULL, parts INTEGER NOT NULL, position BIGINT NOT NULL,
    PRIMARY KEY (name, part))"""


@dataclass(frozen=True)
class Projection:
    name: str
    topics: frozenset[str]
    tables: tuple[str, ...]
    schema: Callable[[int], list[str]]
    apply: Callable[[Cursor, int, list[LoggedEvent]], None]


def all_projections(
    keywords: rules.Keywords = rules.DEFAULT_KEYWORDS,
    next_actions: Mapping[str, str] | None = None,
    vault: Vault | None = None,
) -> dict[str, Projection]:
    """`vault`: the store's; the projections name identities and refer to what they show with
    it (projections.personal). None: a plaintext store."""
    return {
        messages.NAME: Projection(
            messages.NAME,
            messages.TOPICS,
            messages.TABLES,
            messages.schema,
            lambda cur, g, events: messages.apply(cur, g, events, next_actions, vault),
        ),
        consent.NAME: Projection(
            consent.NAME,
            consent.TOPICS,
            consent.TABLES,
            consent.schema,
            lambda cur, g, events: consent.apply(cur, g, events, keywords, vault),
        ),
        callbacks.NAME: Projection(
            callbacks.NAME, callbacks.TOPICS, callbacks.TABLES, callbacks.schema, callbacks.apply
        ),
    }


def set_up(cur: Cursor, projections: Iterable[Projection]) -> None:
    """Creates the positions table and generation 1 of any projection not yet there."""
    # Two processes starting together must not both create generation 1.
    cur.backend.setup_lock(cur, 4711001)
    cur.execute(POSITIONS_DDL)
    cur.execute(PARTS_DDL)
    cur.execute(FAULTS_DDL)
    for projection in projections:
        row = cur.execute(
            "SELECT generation FROM ledger_projections WHERE name = ?", (projection.name,)
        ).fetchone()
        if row is not None:
            continue
        for statement in projection.schema(1):
            cur.execute(statement)
        cur.execute(
            "INSERT INTO ledger_projections (name, generation, position) VALUES (?, 1, 0)",
            (projection.name,),
        )
        point_views(cur, projection, 1)


def point_views(cur: Cursor, projection: Projection, generation: int) -> None:
    for table in projection.tables:
        # Made again, not altered: PostgreSQL fixes a view's columns when it is made.
        cur.execute(f"DROP VIEW IF EXISTS {table}")
        cur.execute(f"CREATE VIEW {table} AS SELECT * FROM {table}_g{generation}")


def drop_generation(cur: Cursor, projection: Projection, generation: int) -> None:
    for table in projection.tables:
        cur.execute(f"DROP TABLE IF EXISTS {table}_g{generation}")


class _Rollback(Exception):
    pass


class Projector:
    def __init__(
        self,
        db: Database,
        events_table: str,
        projections: dict[str, Projection],
        page_size: int = 1000,
        vault: Vault | None = None,
    ) -> None:
        self.db = db
        # Opens the personal fields of encrypted events (store.vault).
        self.vault = vault if vault is not None else plaintext()
        self.log = EventLog(events_table, db.backend, self.vault)
        self.projections = projections
        self.page_size = page_size

    def setup(self) -> None:
        with self.db.transaction() as cur:
            set_up(cur, self.projections.values())

    # ---- positions ------------------------------------------------------------------------

    @contextmanager
    def locked(self, name: str) -> Iterator[tuple[Cursor, Row]]:
        """A transaction holding `name`'s positions row (and the follower) off."""
        with self.db.transaction() as cur:
            yield cur, self.lock_row(cur, name)

    @staticmethod
    def lock_row(cur: Cursor, name: str) -> Row:
        lock = cur.backend.for_update
        return _row(
            cur.execute(f"SELECT * FROM ledger_projections WHERE name = ?{lock}", (name,)), name
        )

    def position(self, name: str, column: str = "position", cur: Cursor | None = None) -> int:
        if cur is None:
            with self.db.read() as cur:
                return self.position(name, column, cur)
        sql = f"SELECT {column} AS position FROM ledger_projections WHERE name = ?"
        return int(_row(cur.execute(sql, (name,)), name)["position"] or 0)

    def topics(self, names: Sequence[str]) -> frozenset[str]:
        return frozenset().union(*(self.projections[name].topics for name in names))

    def positions(self) -> dict[str, dict[str, Any]]:
        with self.db.read() as cur:
            head = self.log.head(cur)
            rows = cur.execute("SELECT * FROM ledger_projections").fetchall()
            faults = read_faults(cur)
        found: dict[str, dict[str, Any]] = {}
        for row in rows:
            name = row["name"]
            if name not in self.projections:
                continue
            found[name] = {
                "generation": int(row["generation"]),
                "position": int(row["position"]),
                "lag": head - int(row["position"]),
                "rebuilding": row["building_generation"] is not None,
            }
            if name in faults:
                found[name]["fault"] = faults[name]
        return found

    def head(self) -> int:
        with self.db.read() as cur:
            return self.log.head(cur)

    # ---- following ------------------------------------------------------------------------

    def catch_up(self) -> int:
        """Follows the log with every projection (see `_follow`); pages applied.

        A projection that fails on an event stops there and the others go on: the failure is
        recorded in `ledger_projection_faults`, logged, and raised as ProjectionStuck. The next
        call tries again, and clears the record once the projection moves on."""
        names = list(self.projections)
        try:
            pages = self._follow(names)
        except Exception as exc:
            if store_unavailable(self.db.backend, exc):
                raise
            pages, faults = 0, {}
            for name in names:
                try:
                    pages += self._follow([name])
                except Exception as error:
                    if store_unavailable(self.db.backend, error):
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
        more pages of a few events each. Pages applied."""
        pages = 0
        positions = {name: self.position(name) for name in names}
        while (moved := self.apply_next_page(names, building=False)) != positions:
            pages += 1
            # Ids can have gaps (a rolled-back insert), so a full page may span more ids.
            advanced = min(moved.values()) - min(positions.values())
            positions = moved
            if advanced < self.page_size:
                break
        return pages

    def apply_next_page(
        self,
        names: Sequence[str],
        *,
        building: bool,
        page: tuple[int, int, list[LoggedEvent]] | None = None,
    ) -> dict[str, int]:
        """One page of the log, read once, applied to each named projection's active (or
        building) generation from its own position, with the positions moved in the same
        transaction; the new positions. A `page` read ahead (after, last, events) is used when
        it starts where the positions are, else the page is read here."""
        generation_column = "building_generation" if building else "generation"
        position_column = "building_position" if building else "position"
        started = time.perf_counter()
        with self.db.transaction() as cur:
            # Rows locked in a fixed order, so two followers or replays never deadlock.
            rows = {name: self.lock_row(cur, name) for name in sorted(names)}
            start = min(int(row[position_column]) for row in rows.values())
            unsealed: UnsealedEvent | None = None
            if page is not None and page[0] == start:
                _, last, events = page
            else:
                try:
                    last, events = self.log.page(cur, start, self.page_size, self.topics(names))
                except UnsealedEvent as found:
                    # Not the ledger's: the page is applied up to it, and stops there.
                    unsealed, (last, events) = found, found.before
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
            fields: dict[str, Any] = {"projections": ",".join(rows), "after": start, "last": last}
            fields |= {"events": len(events), "building": building}
            fields["duration_ms"] = round((time.perf_counter() - started) * 1000, 3)
            log.debug("projection page", extra={"fields": fields})
        if unsealed is not None:
            raise unsealed
        return positions

    # ---- faults ---------------------------------------------------------------------------

    def freshness(self, name: str, upto: int) -> tuple[Fault | None, bool]:
        """`name`'s fault if it has one, and whether the log holds events of its kinds up to
        notification `upto` that it has not applied yet."""
        with self.db.read() as cur:
            fault = read_faults(cur).get(name)
            position = self.position(name, cur=cur)
            pending = position < upto and self.log.has_events_after(
                cur, position, self.projections[name].topics, upto
            )
            return fault, pending

    def _clear_faults(self, names: list[str]) -> None:
        with self.db.read() as cur:
            stale = set(read_faults(cur, EVENT)) & set(names)
        if stale:
            with self.db.transaction() as cur:
                for name in stale:
                    clear_faults(cur, name, EVENT)
            log.warning("projection(s) %s moved on: no longer stuck", ", ".join(sorted(stale)))

    def _record_fault(self, name: str, exc: Exception) -> Fault:
        """Finds the event `name` cannot apply, records it and logs it loudly; the record."""
        position = self.position(name)
        with self.db.read() as cur:
            known = read_faults(cur, EVENT).get(name)
        if known is not None and known["position"] == position:
            return known  # already found and logged; still stuck
        try:
            culprit = self.locate_fault(name, position, building=False)
        except Exception as failure:  # the page cannot even be read (decoded)
            if store_unavailable(self.db.backend, failure):
                raise
            culprit = None
        event, error = culprit if culprit else (None, exc)
        fault = {"kind": EVENT, "position": position, **_culprit(event, error), "since": now()}
        with self.db.transaction() as cur:
            write_fault(cur, name, fault)
        log.error(
            "PROJECTION %s IS STUCK: it %s. It retries, and /healthz answers 503 until the "
            "cause is fixed",
            name,
            describe(fault),
        )
        return fault

    def locate_fault(
        self, name: str, position: int, *, building: bool
    ) -> tuple[LoggedEvent, Exception] | None:
        """The first event after `position` that `name` cannot apply on its own (each applied
        alone and rolled back), and the error; None when each applies."""
        projection = self.projections[name]
        column = "building_generation" if building else "generation"
        generation = self.position(name, column)
        unsealed: UnsealedEvent | None = None
        with self.db.read() as cur:
            try:
                _, events = self.log.page(cur, position, self.page_size, projection.topics)
            except UnsealedEvent as found:
                unsealed, (_, events) = found, found.before
        for event in events:
            try:
                with self.db.transaction() as cur:
                    projection.apply(cur, generation, [event])
                    raise _Rollback
            except _Rollback:
                continue
            except Exception as error:
                if store_unavailable(self.db.backend, error):
                    raise
                return event, error
        if unsealed is not None:
            return unsealed.event, unsealed
        return None

    def explain(self, names: Sequence[str], exc: Exception, *, building: bool) -> str:
        """In words, which event which of `names` cannot apply (after `exc` stopped them)."""
        column = "building_position" if building else "position"
        found = []
        for name in names:
            culprit = self.locate_fault(name, self.position(name, column), building=building)
            if culprit is not None:
                found.append(f"{name} {describe(_culprit(*culprit))}")
        return "; ".join(found) or summary(exc)


def _culprit(event: LoggedEvent | None, error: BaseException) -> Fault:
    """A fault's fields naming the event that cannot be applied (if found) and the error."""
    return {
        "notification_id": event.notification_id if event else None,
        "stream": event.originator_id if event else None,
        "event": event.topic.rpartition(":")[2] if event else None,
        "error": summary(error),
    }


def _row(rows: Any, name: str) -> Row:
    found: Row | None = rows.fetchone()
    if found is None:
        raise LookupError(f"projection {name!r} is not set up")
    return found
