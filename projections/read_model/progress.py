"""How far the projections are, for /metrics."""

from __future__ import annotations

from projections.log_reader import EventLog
from store.backend import Cursor


def positions(cur: Cursor) -> list[tuple[str, int]]:
    rows = cur.execute("SELECT name, position FROM ledger_projections").fetchall()
    return [(str(row["name"]), int(row["position"])) for row in rows]


def stuck(cur: Cursor) -> set[str]:
    """The projections with a recorded fault."""
    rows = cur.execute("SELECT DISTINCT name FROM ledger_projection_faults").fetchall()
    return {str(row["name"]) for row in rows}


def first_state_after(cur: Cursor, log: EventLog, position: int) -> bytes | None:
    """The stored state of the first event after `position`, if any."""
    found = cur.tuples(
        f"SELECT state FROM {log.table} WHERE {log.id_column} > ? ORDER BY {log.id_column} LIMIT 1",
        [position],
    )
    return bytes(found[0][0]) if found else None


def count_topic(cur: Cursor, log: EventLog, after: int, upto: int, topic: str) -> int:
    """Events of `topic` with ids in (after, upto]."""
    row = cur.execute(
        f"SELECT COUNT(*) AS n FROM {log.table} WHERE {log.id_column} > ? "
        f"AND {log.id_column} <= ? AND topic = ?",
        (after, upto, topic),
    ).fetchone()
    return int(row["n"]) if row else 0
