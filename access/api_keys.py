"""API keys and the access log, kept in the store beside the ledger.

A key is 256 random bits, shown once; the store keeps only its SHA-256, so a dump reveals no
usable key. A slow password hash protects low-entropy secrets; a 256-bit random token cannot
be guessed at any speed, and one fast hash lets a request find its key by an indexed lookup.

The access log records who read audit data (audit-scope requests, `callback-ledger audit`). It
is append-only: nothing here updates or deletes it, and the database refuses both."""

from __future__ import annotations

import getpass
import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from store.backend import Database

SCOPES = ("read", "audit", "metrics", "admin")
# A prefix makes a leaked key recognisable (secret scanners, logs) and says what it is for.
PREFIX = "clk_"
FIRST_KEY_NAME = "admin"

KEYS_TABLE = "ledger_api_keys"
ACCESS_TABLE = "ledger_access_log"

KEYS_DDL = f"""CREATE TABLE IF NOT EXISTS {KEYS_TABLE} (
    name TEXT PRIMARY KEY,
    key_hash TEXT NOT NULL UNIQUE,
    scopes TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT,
    revoked_at TEXT,
    last_used_at TEXT
)"""
ACCESS_COLUMNS = "at, actor, route, subject, results, status"
ACCESS_COLUMN_DDL = (
    "at TEXT NOT NULL, actor TEXT NOT NULL, route TEXT NOT NULL, subject TEXT NOT NULL, "
    "results INTEGER NOT NULL, status INTEGER NOT NULL"
)


class KeyProblem(ValueError):
    """A key command that cannot be done (a name taken, an unknown name, a bad scope)."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def text_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def new_key() -> str:
    return PREFIX + secrets.token_urlsafe(32)  # 32 bytes: 256 bits


def parse_scopes(values: Iterable[str]) -> tuple[str, ...]:
    """Scopes from `--scope read,audit` (repeatable); `all` is every scope."""
    given = [s.strip().lower() for value in values for s in value.split(",") if s.strip()]
    if "all" in given:
        return SCOPES
    unknown = sorted(set(given) - set(SCOPES))
    if unknown:
        raise KeyProblem(f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(SCOPES)}, all")
    if not given:
        raise KeyProblem(f"give at least one scope: {', '.join(SCOPES)} or all")
    return tuple(s for s in SCOPES if s in given)


@dataclass(frozen=True)
class Key:
    name: str
    key_hash: str
    scopes: frozenset[str]
    expires: datetime | None
    revoked: bool

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Key:
        expires = row["expires_at"]
        return cls(
            name=row["name"],
            key_hash=row["key_hash"],
            scopes=frozenset(row["scopes"].split(",")),
            expires=datetime.fromisoformat(expires.replace("Z", "+00:00")) if expires else None,
            revoked=row["revoked_at"] is not None,
        )

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires is not None and self.expires <= (now or utc_now())


def cli_user() -> str:
    """Who ran a CLI command, as the access log names them."""
    try:
        user = getpass.getuser()
    except Exception:  # no name for this uid (a container)
        user = f"uid {os.getuid()}"
    return f"cli:{user}"


class KeyStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._ready = False

    def setup(self) -> None:
        """Creates the tables if they are missing. `serve` calls it before starting its
        workers, so they find the tables made (concurrent DDL can fail on PostgreSQL)."""
        if self._ready:
            return
        with self.db.transaction() as cur:
            if cur.backend.tables_present(cur, [KEYS_TABLE, ACCESS_TABLE]) != 2:
                cur.execute(KEYS_DDL)
                for statement in cur.backend.append_only_table_ddl(ACCESS_TABLE, ACCESS_COLUMN_DDL):
                    cur.execute(statement)
        self._ready = True

    def create(self, name: str, scopes: Sequence[str], expires_in_days: float | None = None) -> str:
        """Stores a new key's hash and returns the key: the only time it is ever known."""
        self.setup()
        name = name.strip()
        # No ":": the access log names CLI users "cli:<user>", which a key must not imitate.
        if not name or len(name) > 100 or any(c.isspace() or c == ":" for c in name):
            raise KeyProblem("a key name is 1-100 characters without spaces or ':'")
        now = utc_now()
        expires = None
        if expires_in_days is not None:
            if expires_in_days <= 0:
                raise KeyProblem("--expires-in must be a positive number of days")
            expires = text_time(now + timedelta(days=expires_in_days))
        key = new_key()
        with self.db.transaction() as cur:
            taken = cur.execute(
                f"SELECT 1 AS x FROM {KEYS_TABLE} WHERE name = ?", [name]
            ).fetchone()
            if taken is not None:
                raise KeyProblem(
                    f"a key named {name!r} exists already (names are kept after revocation, "
                    "for the access log); choose another name"
                )
            cur.execute(
                f"INSERT INTO {KEYS_TABLE} (name, key_hash, scopes, created_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?)",
                [name, key_hash(key), ",".join(scopes), text_time(now), expires],
            )
        return key

    def create_first(self) -> str | None:
        """An all-scopes key named `admin` if the store holds no key at all (not even a
        revoked one), else None."""
        self.setup()
        with self.db.read() as cur:
            row = cur.execute(f"SELECT count(*) AS n FROM {KEYS_TABLE}").fetchone()
        if row is not None and int(row["n"]) > 0:
            return None
        try:
            return self.create(FIRST_KEY_NAME, SCOPES)
        except KeyProblem:
            return None  # another process made it first

    def listed(self) -> list[dict[str, Any]]:
        self.setup()
        with self.db.read() as cur:
            rows = cur.execute(
                f"SELECT name, scopes, created_at, expires_at, revoked_at, last_used_at "
                f"FROM {KEYS_TABLE} ORDER BY created_at, name"
            ).fetchall()
        now = utc_now()
        for row in rows:
            key = Key.from_row({**row, "key_hash": ""})
            row["state"] = "revoked" if key.revoked else "expired" if key.expired(now) else "active"
        return rows

    def revoke(self, name: str) -> bool:
        """Revokes the key; False if no active key has that name."""
        self.setup()
        with self.db.transaction() as cur:
            cur.execute(
                f"UPDATE {KEYS_TABLE} SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                [text_time(utc_now()), name],
            )
            return cur.rowcount > 0

    def find(self, hashed: str) -> Key | None:
        """The key with this hash, revoked or expired ones included (the caller says which)."""
        self.setup()
        with self.db.read() as cur:
            row = cur.execute(
                f"SELECT name, key_hash, scopes, expires_at, revoked_at FROM {KEYS_TABLE} "
                "WHERE key_hash = ?",
                [hashed],
            ).fetchone()
        if row is None:
            return None
        key = Key.from_row(row)
        # The lookup matched by the index; compare again in constant time, so no answer
        # depends on how much of a guess matched.
        return key if hmac.compare_digest(key.key_hash, hashed) else None

    def touch(self, name: str, at: datetime) -> None:
        with self.db.transaction() as cur:
            cur.execute(
                f"UPDATE {KEYS_TABLE} SET last_used_at = ? WHERE name = ?", [text_time(at), name]
            )

    def record_access(
        self, actor: str, route: str, subject: dict[str, Any], results: int, status: int = 200
    ) -> None:
        self.setup()
        with self.db.transaction() as cur:
            cur.execute(
                f"INSERT INTO {ACCESS_TABLE} ({ACCESS_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                [
                    text_time(utc_now()),
                    actor,
                    route,
                    orjson.dumps(subject, option=orjson.OPT_SORT_KEYS).decode(),
                    results,
                    status,
                ],
            )

    def accesses(
        self,
        since: str | None = None,
        actor: str | None = None,
        after: int = 0,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Entries in the order they were written, from id `after` on."""
        self.setup()
        where: list[str] = ["id > ?"]
        params: list[Any] = [after]
        if since is not None:
            where.append("at >= ?")
            params.append(text_time(datetime.fromisoformat(since.replace("Z", "+00:00"))))
        if actor is not None:
            where.append("actor = ?")
            params.append(actor)
        sql = f"SELECT id, {ACCESS_COLUMNS} FROM {ACCESS_TABLE} WHERE {' AND '.join(where)} "
        sql += "ORDER BY id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        with self.db.read() as cur:
            rows = cur.execute(sql, params).fetchall()
        for row in rows:
            row["subject"] = orjson.loads(row["subject"])
        return rows
