"""The projections' tables: positions, generations and the views over them.

Tables are versioned by generation (`message_status_g3`); the names users query are views over
the active generation."""

from __future__ import annotations

from collections.abc import Iterable

from projections.faults import FAULTS_DDL
from projections.projection import Projection
from store.backend import Cursor

POSITIONS_DDL = """CREATE TABLE IF NOT EXISTS ledger_projections (
    name TEXT PRIMARY KEY, generation INTEGER NOT NULL, position BIGINT NOT NULL,
    building_generation INTEGER, building_position BIGINT)"""
# A rebuild split across processes: each part's own position (see replay.Rebuild.build_part).
PARTS_DDL = """CREATE TABLE IF NOT EXISTS ledger_replay_parts (
    name TEXT NOT NULL, part INTEGER NOT NULL, parts INTEGER NOT NULL, position BIGINT NOT NULL,
    PRIMARY KEY (name, part))"""


def set_up(cur: Cursor, projections: Iterable[Projection]) -> None:
    """Creates the positions table and generation 1 of any projection not yet there."""
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
        point_view(cur, table, f"{table}_g{generation}")


def point_view(cur: Cursor, view: str, table: str) -> None:
    # Made again, not altered: PostgreSQL fixes a view's columns when it is made.
    cur.execute(f"DROP VIEW IF EXISTS {view}")
    cur.execute(f"CREATE VIEW {view} AS SELECT * FROM {table}")


def drop_generation(cur: Cursor, projection: Projection, generation: int) -> None:
    for table in projection.tables:
        cur.execute(f"DROP TABLE IF EXISTS {table}_g{generation}")
