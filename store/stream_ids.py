"""How this store names a message's stream: `ledger_stream_ids`, one row, written when the
store's tables are made.

A store made by this version names a message whose id is a ULID (as Sinch's are) by a
time-ordered id after every other stream's (domain.ids.TAIL): a prefix, the ULID's
milliseconds, then the hashed name. New streams then go in at the end of the log's primary key
instead of at a random place in it, so each insert touches the pages the last ones did. A store
keeps the layout it was made with, for ever: a message's later reports must find the stream
its first ones are in. So a store made before TAIL keeps ORDERED, and a store that already held
events when the table was made (the first versions') keeps HASHED."""

from __future__ import annotations

from typing import Any

from domain.ids import HASHED, LAYOUTS, TAIL
from store.db import Database

TABLE = "ledger_stream_ids"


def create(execute: Any, log_is_empty: bool, schema: str = "") -> None:
    """Creates the table and its row; `execute` is a cursor's or connection's."""
    table = f"{schema}.{TABLE}" if schema else TABLE
    execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, messages TEXT NOT NULL)")
    scheme = TAIL if log_is_empty else HASHED
    execute(f"INSERT INTO {table} (id, messages) VALUES (1, '{scheme}')")


def layout(db: Database) -> str:
    """How this store names its message streams (domain.ids' layouts)."""
    with db.read() as cur:
        row = cur.execute(f"SELECT messages FROM {TABLE} WHERE id = 1").fetchone()
    if row is None:
        return HASHED
    if row["messages"] not in LAYOUTS:  # a later version's: its streams could not be found
        raise RuntimeError(f"this store names its message streams {row['messages']!r}: unknown")
    return str(row["messages"])
