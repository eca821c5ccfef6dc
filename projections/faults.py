"""The faults table: which projection cannot apply an event of the log (kind "event"), and
why; cleared once it moves on. A fault of the store, not of an event, is told apart by
store.backend.store_unavailable and retried as it is."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from store.backend import Cursor

FAULTS_DDL = """CREATE TABLE IF NOT EXISTS ledger_projection_faults (
    name TEXT NOT NULL, kind TEXT NOT NULL, position BIGINT NOT NULL, notification_id BIGINT,
    stream TEXT, event TEXT, error TEXT NOT NULL, since TEXT NOT NULL,
    PRIMARY KEY (name, kind))"""
EVENT = "event"
FIELDS = ("kind", "position", "notification_id", "stream", "event", "error", "since")

# A fault as the table holds it (and /healthz shows it): FIELDS.
Fault = dict[str, Any]


class ProjectionStuck(RuntimeError):
    """Projections that cannot apply an event of the log: they stay where they are (an event
    skipped would leave their rows wrong) until the cause is fixed."""

    def __init__(self, faults: dict[str, Fault]) -> None:
        self.faults = faults
        super().__init__(
            "; ".join(f"{name}: {describe(fault)}" for name, fault in sorted(faults.items()))
        )


def summary(exc: BaseException) -> str:
    """An error in one line for /healthz and the log: the database's DETAIL lines (which can
    quote a row's values, a phone number among them) are left out."""
    lines = str(exc).splitlines()
    return f"{type(exc).__name__}: {(lines[0] if lines else '')[:300]}"


def describe(fault: Fault) -> str:
    where = (
        f"event {fault['notification_id']} ({fault['event']} on stream {fault['stream']})"
        if fault.get("notification_id") is not None
        else f"the events after {fault['position']}"
    )
    return f"cannot apply {where}: {fault['error']}"


def now() -> str:
    return datetime.now(UTC).isoformat()


def write_fault(cur: Cursor, name: str, fault: Fault) -> None:
    clear_faults(cur, name, fault["kind"])
    cur.execute(
        f"INSERT INTO ledger_projection_faults (name, {', '.join(FIELDS)}) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (name, *(fault.get(field) for field in FIELDS)),
    )


def clear_faults(cur: Cursor, name: str, kind: str | None = None) -> None:
    if kind is None:
        cur.execute("DELETE FROM ledger_projection_faults WHERE name = ?", (name,))
    else:
        cur.execute(
            "DELETE FROM ledger_projection_faults WHERE name = ? AND kind = ?", (name, kind)
        )


def read_faults(cur: Cursor, kind: str | None = None) -> dict[str, Fault]:
    """A fault per projection that has one (of `kind`, if given)."""
    rows = cur.execute("SELECT * FROM ledger_projection_faults ORDER BY name, kind").fetchall()
    found: dict[str, Fault] = {}
    for row in rows:
        if kind is None or row["kind"] == kind:
            fault = {field: row[field] for field in FIELDS}
            found.setdefault(row["name"], fault | {"position": int(row["position"])})
    return found
