"""Console sessions, kept in the store: the browser holds a random session id; the store holds
only its SHA-256, the key's hash, a CSRF token and an expiry, so a copy of the database cannot
be turned into a session, and signing out ends the session everywhere.

The console's cookie-signing secret is made at random on first use and kept in the store, so
every server process shares it without configuration; deleting the row signs everyone out."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from store.backend import Database

TABLE = "ledger_console_sessions"
DDL = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} (id_hash TEXT PRIMARY KEY, key_hash TEXT NOT NULL, "
    "csrf TEXT NOT NULL, expires_at TEXT NOT NULL)"
)


@dataclass(frozen=True)
class Session:
    key_hash: str
    csrf: str


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ConsoleSessions:
    def __init__(self, db: Database, lifetime_s: int) -> None:
        self.db = db
        self.lifetime = timedelta(seconds=lifetime_s)
        self._ready = False

    def _setup(self) -> None:
        if not self._ready:
            try:
                with self.db.transaction() as cur:
                    cur.execute(DDL)
            except Exception:  # two processes creating the table at once on PostgreSQL
                with self.db.transaction() as cur:
                    cur.execute(DDL)
            self._ready = True

    def start(self, key_hash: str) -> tuple[str, Session]:
        """A new session for the key; the id is what the cookie carries (shown once)."""
        self._setup()
        session_id = secrets.token_urlsafe(32)
        session = Session(key_hash, secrets.token_urlsafe(24))
        now = datetime.now(UTC)
        with self.db.transaction() as cur:
            # Sessions past their expiry are dropped as new ones start: the table stays small.
            cur.execute(f"DELETE FROM {TABLE} WHERE expires_at < ?", [_stamp(now)])
            cur.execute(
                f"INSERT INTO {TABLE} (id_hash, key_hash, csrf, expires_at) VALUES (?, ?, ?, ?)",
                [_hash(session_id), key_hash, session.csrf, _stamp(now + self.lifetime)],
            )
        return session_id, session

    def find(self, session_id: str) -> Session | None:
        self._setup()
        with self.db.read() as cur:
            row = cur.execute(
                f"SELECT key_hash, csrf FROM {TABLE} WHERE id_hash = ? AND expires_at >= ?",
                [_hash(session_id), _stamp(datetime.now(UTC))],
            ).fetchone()
        return None if row is None else Session(str(row["key_hash"]), str(row["csrf"]))

    def end(self, session_id: str) -> None:
        self._setup()
        with self.db.transaction() as cur:
            cur.execute(f"DELETE FROM {TABLE} WHERE id_hash = ?", [_hash(session_id)])


SECRET_TABLE = "ledger_console_secret"
SECRET_DDL = (
    f"CREATE TABLE IF NOT EXISTS {SECRET_TABLE} (id INTEGER PRIMARY KEY, secret TEXT NOT NULL)"
)


def console_secret(db: Database) -> str:
    """The stored secret, made now if there is none (a racing process's insert wins)."""
    try:
        return _stored(db)
    except Exception:  # two processes creating the table at once on PostgreSQL: once more
        return _stored(db)


def _stored(db: Database) -> str:
    with db.transaction() as cur:
        cur.execute(SECRET_DDL)
        cur.execute(
            f"INSERT INTO {SECRET_TABLE} (id, secret) VALUES (1, ?) ON CONFLICT (id) DO NOTHING",
            [secrets.token_urlsafe(32)],
        )
        row = cur.execute(f"SELECT secret FROM {SECRET_TABLE} WHERE id = 1").fetchone()
    assert row is not None
    return str(row["secret"])
