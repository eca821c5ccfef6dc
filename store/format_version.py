"""The store's format version: `ledger_format`, one row, written with the store's tables while
its log is empty, and checked by every command (`check`). UPGRADES[n] takes a store of version
n to n + 1; a store without the row is a development build's: refused, with the way to carry
its callbacks over."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from store.backend import Cursor, Database

TABLE = "ledger_format"
VERSION = 1
# version -> what takes a store of that version to the next one.
UPGRADES: dict[int, Callable[[Cursor], None]] = {}
CARRY_OVER = (
    "export its callbacks with `callback-ledger export --out FILE` (this version reads them), "
    "then record them into a new store with `callback-ledger ingest --keep-arrival FILE`"
)


class FormatError(RuntimeError):
    """The store is not of a format this version reads."""


def create(execute: Any, log_is_empty: bool, schema: str = "") -> None:
    """Creates the table and its row, unless the log holds events (a development build's
    store, left for `check` to refuse)."""
    if not log_is_empty:
        return
    table = f"{schema}.{TABLE}" if schema else TABLE
    execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, version INTEGER NOT NULL)")
    execute(f"INSERT INTO {table} (id, version) VALUES (1, {VERSION})")


def check(db: Database, where: str) -> None:
    """Raises FormatError unless the store at `where` is of VERSION, after the upgrades it
    needs (run here)."""
    found = version(db)
    if found == VERSION:
        return
    if found is None:
        raise FormatError(
            f"{where} was written by a development build (it has no format version): {CARRY_OVER}"
        )
    if found > VERSION:
        raise FormatError(
            f"{where} is of format version {found}, newer than this version's ({VERSION}): "
            "run a version that reads it"
        )
    for step in range(found, VERSION):
        with db.transaction() as cur:
            UPGRADES[step](cur)
            cur.execute(f"UPDATE {TABLE} SET version = ? WHERE id = 1", (step + 1,))


def version(db: Database) -> int | None:
    """The store's format version (VERSION for a store not made yet, or whose log is empty);
    None: a development build's store."""
    events = db.backend.events_table
    with db.read() as cur:
        if cur.backend.tables_present(cur, [TABLE]):
            row = cur.execute(f"SELECT version FROM {TABLE} WHERE id = 1").fetchone()
            return None if row is None else int(row["version"])
        return None if _holds_events(cur, events) else VERSION


def _holds_events(cur: Cursor, events: str) -> bool:
    if not cur.backend.tables_present(cur, [events]):
        return False
    return cur.execute(f"SELECT 1 FROM {events} LIMIT 1").fetchone() is not None
