"""The secret the console signs its session cookies with: made at random on first use and kept
in the store, so every server process (and every restart) shares it without configuration.
Deleting the row signs everyone out."""

from __future__ import annotations

import secrets

from store.db import Database

TABLE = "ledger_console_secret"
DDL = f"CREATE TABLE IF NOT EXISTS {TABLE} (id INTEGER PRIMARY KEY, secret TEXT NOT NULL)"


def console_secret(db: Database) -> str:
    """The stored secret, made now if there is none (a racing process's insert wins)."""
    try:
        return _stored(db)
    except Exception:  # two processes creating the table at once on PostgreSQL: once more
        return _stored(db)


def _stored(db: Database) -> str:
    with db.transaction() as cur:
        cur.execute(DDL)
        cur.execute(
            f"INSERT INTO {TABLE} (id, secret) VALUES (1, ?) ON CONFLICT (id) DO NOTHING",
            [secrets.token_urlsafe(32)],
        )
        row = cur.execute(f"SELECT secret FROM {TABLE} WHERE id = 1").fetchone()
    assert row is not None
    return str(row["secret"])
