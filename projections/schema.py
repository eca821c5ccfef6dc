"""The projections' tables: positions, generations and the views over them, and the upgrade of
a database set up by an earlier version (tables and columns added since, marked as needing a
replay to fill them).

Tables are versioned by generation (`message_status_g3`); the names users query are views over
the active generation."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from projections.faults import FAULTS_DDL, REPLAY, now, write_fault
from projections.projection import Projection
from store.db import Cursor, Row

log = logging.getLogger("callback_ledger")

POSITIONS_DDL = """CREATE TABLE IF NOT EXISTS ledger_projections (
    name TEXT PRIMARY KEY, generation INTEGER NOT NULL, position BIGINT NOT NULL,
    building_generation INTEGER, building_position BIGINT)"""
# A rebuild split across processes: each part's own position (see replay.Rebuild.build_part).
PARTS_DDL = """CREATE TABLE IF NOT EXISTS ledger_replay_parts (
    name TEXT NOT NULL, part INTEGER NOT NULL, parts INTEGER NOT NULL, position BIGINT NOT NULL,
    PRIMARY KEY (name, part))"""


def set_up(cur: Cursor, projections: Iterable[Projection]) -> None:
    """Creates the positions table and generation 1 of any projection not yet there, and
    any table a projection has gained since its generation was built."""
    # Two processes starting together must not both create generation 1.
    cur.backend.setup_lock(cur, 4711001)
    cur.execute(POSITIONS_DDL)
    cur.execute(PARTS_DDL)
    cur.execute(FAULTS_DDL)
    for projection in projections:
        row = cur.execute(
            "SELECT generation, building_generation FROM ledger_projections WHERE name = ?",
            (projection.name,),
        ).fetchone()
        if row is not None:
            add_missing_tables(cur, projection, row)
            continue
        for statement in projection.schema(1):
            cur.execute(statement)
        cur.execute(
            "INSERT INTO ledger_projections (name, generation, position) VALUES (?, 1, 0)",
            (projection.name,),
        )
        point_views(cur, projection, 1)


def add_missing_tables(cur: Cursor, projection: Projection, row: Row) -> None:
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
                point_view(cur, table, name)
                if table in projection.complete_when_new:
                    continue
                # Until the replay its answers may be wrong (contact_identities decides
                # which numbers a contact-wide opt-out covers): said so, not guessed.
                why = (
                    f"{table} is new in this version and holds nothing from before it: run "
                    f"`callback-ledger replay --projection {projection.name}`"
                )
                needs_replay(cur, projection.name, int(row["generation"]), why)
        for table, column, sql_type in projection.added_columns:
            name = f"{table}_g{generation}"
            if not _table_exists(cur, name) or column in _columns(cur, name):
                continue
            cur.execute(f"ALTER TABLE {name} ADD COLUMN {column} {sql_type}")
            if active:
                point_view(cur, table, name)
                why = (
                    f"{table}.{column} is new in this version and empty for what came "
                    f"before it: run `callback-ledger replay --projection {projection.name}`"
                )
                needs_replay(cur, projection.name, int(row["generation"]), why)
        if active:
            # Indexes changed since (the metadata prefix): made as this version makes them.
            with_layout = {
                f"INDEX {name.format(g=generation)} " for name in projection.layout_indexes
            }
            for statement in statements:
                if statement.startswith("DROP INDEX"):
                    cur.execute(statement)
                elif statement.startswith("CREATE INDEX") and not any(
                    mark in statement for mark in with_layout
                ):
                    cur.execute(statement.replace("CREATE INDEX", "CREATE INDEX IF NOT EXISTS"))


def point_views(cur: Cursor, projection: Projection, generation: int) -> None:
    for table in projection.tables:
        point_view(cur, table, f"{table}_g{generation}")


def point_view(cur: Cursor, view: str, table: str) -> None:
    # Made again, not altered: PostgreSQL fixes a view's columns when it is made.
    cur.execute(f"DROP VIEW IF EXISTS {view}")
    cur.execute(f"CREATE VIEW {view} AS SELECT * FROM {table}")


def drop_generation(cur: Cursor, projection: Projection, generation: int) -> None:
    for table in projection.tables:
        cur.execute(f"DROP TABLE IF EXISTS {table}_g{generation}")


def needs_replay(cur: Cursor, name: str, generation: int, why: str) -> None:
    """Marks a projection as answering without what an earlier version never recorded, until
    a replay rebuilds it (the mark goes with the rebuild)."""
    fault = {"kind": REPLAY, "position": generation, "error": why}
    write_fault(cur, name, {**fault, "since": now()})
    log.error("projection %s needs a replay: %s", name, why)


def _lacks(cur: Cursor, projection: Projection, generation: int) -> bool:
    """Whether a generation lacks a table or a column this version's projection has, or has a
    table keyed otherwise (an earlier version's layout: its indexes would not be this one's)."""
    for table in projection.tables:
        if not _table_exists(cur, f"{table}_g{generation}"):
            return True
    for table, key in projection.keys:
        if cur.backend.primary_key(cur, f"{table}_g{generation}") != key:
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
