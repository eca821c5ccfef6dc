"""How this store names a message's stream: `ledger_stream_ids`, one row, written when the
store's tables are made.

A store made by this version names a message whose id is a ULID (as Sinch's are) by a
time-ordered id: the ULID's milliseconds, then the hashed name (domain.ids). New streams then
go in at the end of the log's primary key instead of at a random place in it, so each insert
touches the pages the last ones did. A store that already held events when the table was made
(an earlier version's) keeps the hashed ids it was written with: a message's later reports
must find the stream its first ones are in."""

from __future__ import annotations

from typing import Any

from store.db import Database

TABLE = "ledger_stream_ids"
ORDERED, HASHED = "ordered", "hashed"


def create(execute: Any, log_is_empty: bool, schema: str = "") -> None:
    """Creates the table and its row; `execute` is a cursor's or connection's."""
    table = f"{schema}.{TABLE}" if schema else TABLE
    execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, messages TEXT NOT NULL)")
    scheme = ORDERED if log_is_empty else HASHED
    execute(f"INSERT INTO {table} (id, messages) VALUES (1, '{scheme}')")


def ordered(db: Database) -> bool:
    """Whether this store's message streams have time-ordered ids."""
    with db.read() as cur:
        row = cur.execute(f"SELECT messages FROM {TABLE} WHERE id = 1").fetchone()
    return row is not None and row["messages"] == ORDERED
