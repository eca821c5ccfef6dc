"""Where the data keys live (store.vault): `ledger_data_keys`, one row per key, wrapped by the
master key; and `ledger_vault`, one row saying the store is encrypted and recognising its keys.

A key row is written by the transaction of the first events that use it (`BatchKeys`), so no
committed event names a key never stored. Destroying keys deletes their rows, then has the
database drop the deleted bytes from its files."""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from eventsourcing.persistence import IntegrityError

from store import envelope, spellings
from store.backend import Backend, Database, select_by_keys
from store.compression import state_compressor
from store.vault import KeyRow, Secrets, SecretsError, Vault

log = logging.getLogger("callback_ledger")

TABLE = "ledger_data_keys"
META = "ledger_vault"
COLUMNS = ("key_id", "subject", "class", "period", "wrapped")
META_CREATE = (
    f"CREATE TABLE {META} (id INTEGER PRIMARY KEY, index_check TEXT NOT NULL, "
    "master_check TEXT NOT NULL, created_at TEXT NOT NULL)"
)
# No index on the subject: erasure and retention are rare, an index would cost every write.


def create_statements(blob: str) -> tuple[str, str]:
    """The tables, `blob` the database's name for a bytes column."""
    return (
        f"CREATE TABLE {TABLE} (key_id {blob} PRIMARY KEY, subject TEXT NOT NULL, class TEXT "
        f"NOT NULL, period TEXT NOT NULL, wrapped {blob} NOT NULL)",
        META_CREATE,
    )


CREATE = create_statements("BLOB")
INSERT = (
    f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))}) "
    "ON CONFLICT (key_id) DO NOTHING"
)


def row(key: KeyRow) -> tuple[Any, ...]:
    return (key.key_id, key.subject, key.klass, key.period, key.wrapped)


def text_row(key: KeyRow) -> tuple[str, ...]:
    """The row as text (PostgreSQL's recorder sends rows as JSON)."""
    return (
        key.key_id.hex(),
        key.subject,
        key.klass,
        key.period,
        base64.b64encode(key.wrapped).decode(),
    )


class KeyDestroyed(IntegrityError):
    """A data key the events were encrypted with was destroyed before they committed: the
    writer maps them again under new keys."""


@dataclass(frozen=True)
class BatchKeys:
    """The data keys a batch of events uses: new ones, inserted with the events, and ones
    committed earlier, which must still exist when the events commit."""

    new: list[KeyRow]
    reused: list[bytes]

    @classmethod
    def of(cls, vault: Vault, states: Iterable[bytes]) -> BatchKeys:
        if not vault.encrypted:
            return cls([], [])
        used = list(dict.fromkeys(envelope.key_ids(states)))
        new = vault.pending(used)
        fresh = {k.key_id for k in new}
        return cls(new, [k for k in used if k not in fresh])

    def check(self, vault: Vault, found: Iterable[bytes]) -> None:
        """Raises KeyDestroyed unless every reused key was `found`."""
        missing = set(self.reused) - set(found)
        if missing:
            vault.destroyed(missing)
            raise KeyDestroyed(f"{len(missing)} data key(s) destroyed while in use")


def select_reused(count: int) -> str:
    return f"SELECT key_id FROM {TABLE} WHERE key_id IN ({', '.join('?' * count)})"


class SQLKeyStore:
    """The vault's keys, read and destroyed through the store's own connections."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def load(self, key_ids: Sequence[bytes]) -> dict[bytes, bytes]:
        with self.db.read() as cur:
            found = select_by_keys(
                cur, TABLE, ("key_id", "wrapped"), ("key_id",), [(k,) for k in key_ids]
            )
        return {bytes(r["key_id"]): bytes(r["wrapped"]) for r in found}

    def destroy(self, subjects: Sequence[str]) -> int:
        """Deletes every key of these subjects (and what the database keeps of them); how many."""
        if not subjects:
            return 0
        marks = ", ".join("?" * len(subjects))
        return self._delete(f"subject IN ({marks})", list(subjects), full=True)

    def _delete(self, where: str, params: list[Any], full: bool) -> int:
        with self.db.transaction() as cur:
            self.db.backend.exclude_writers(cur, TABLE)
            self.db.backend.secure_delete(cur)
            cur.execute(f"DELETE FROM {TABLE} WHERE {where}", params)
            count = cur.rowcount
        self.db.backend.purge_deleted(TABLE, full=full)
        return count

    def expired(self, klass: str, before: str) -> list[dict[str, Any]]:
        """Per period older than `before` ('YYYY-MM'), how many keys of this class."""
        with self.db.read() as cur:
            return cur.execute(
                f"SELECT period, count(*) AS n FROM {TABLE} WHERE class = ? AND period < ? "
                "GROUP BY period ORDER BY period",
                (klass, before),
            ).fetchall()

    def destroy_expired(self, klass: str, before: str) -> int:
        """Deletes the keys of this class older than `before`. Not a VACUUM FULL: a daily
        rewrite of the table would hold up every write meanwhile."""
        return self._delete("class = ? AND period < ?", [klass, before], full=False)

    def subjects(self, subjects: Sequence[str]) -> int:
        """How many keys these subjects have."""
        if not subjects:
            return 0
        with self.db.read() as cur:
            marks = ", ".join("?" * len(subjects))
            row = cur.execute(
                f"SELECT count(*) AS n FROM {TABLE} WHERE subject IN ({marks})", list(subjects)
            ).fetchone()
        return int(row["n"]) if row else 0


class SQLEventSource:
    """The events that read tables refer to (store.vault.reference), by notification id."""

    def __init__(self, db: Database, events_table: str) -> None:
        self.db = db
        self.table = events_table

    def states(self, vault: Vault, ids: Sequence[int]) -> dict[int, Mapping[str, object]]:
        column = self.db.backend.log_id_column
        rows: list[Any] = []
        with self.db.read() as cur:
            for begin in range(0, len(ids), 500):
                chunk = list(ids[begin : begin + 500])
                rows += cur.execute(
                    f"SELECT {column} AS id, topic, state FROM {self.table} "
                    f"WHERE {column} IN ({', '.join('?' * len(chunk))})",
                    chunk,
                ).fetchall()
        states = [(int(r["id"]), spellings.read(r["topic"]), bytes(r["state"])) for r in rows]
        vault.prefetch(envelope.key_ids(state for _, _, state in states))
        zstd = state_compressor()
        return {
            id_: envelope.open_state(state, vault, zstd, topic)
            if envelope.is_sealed(state)
            else json.loads(zstd.decompress(state))  # an event holding nothing personal
            for id_, topic, state in states
        }


def holds_data(backend: Backend) -> bool:
    """Whether the store holds events, or is encrypted already: keys made for it now could not
    open what it holds. A SQLite file that does not exist is not made here."""
    path = backend.store_file()
    if path is not None and not os.path.exists(path):
        return False
    db = Database(backend)
    try:
        with db.read() as cur:
            for table in (META, backend.events_table):
                if (
                    backend.tables_present(cur, [table])
                    and cur.execute(f"SELECT 1 AS x FROM {table} LIMIT 1").fetchone()
                ):
                    return True
    finally:
        db.close()
    return False


def open_vault(db: Database, secrets: Secrets | None, log_is_empty: bool, store: str) -> Vault:
    """The store's vault. An encrypted store needs its keys (else SecretsError); a new store
    given keys becomes encrypted; one written without keys stays plaintext."""
    with db.read() as cur:
        row = cur.execute(f"SELECT index_check, master_check FROM {META}").fetchone()
    if row is None and secrets is not None and log_is_empty:
        vault = _vault(db, secrets)
        index_check, master_check = vault.check_values()
        with db.transaction() as cur:
            cur.execute(
                f"INSERT INTO {META} (id, index_check, master_check, created_at) "
                "VALUES (1, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                (index_check, base64.b64encode(master_check).decode(), _now()),
            )
        with db.read() as cur:
            row = cur.execute(f"SELECT index_check, master_check FROM {META}").fetchone()
    if row is None:
        if secrets is not None:
            log.warning(
                "the store (%s) was written without encryption: its personal data stays in "
                "plaintext and cannot be erased by destroying keys; `callback-ledger migrate` "
                "copies it into a new, encrypted store",
                store,
            )
        else:
            log.warning(
                "personal data in the store (%s) is stored unencrypted: set LEDGER_MASTER_KEY and "
                "LEDGER_INDEX_KEY (`callback-ledger secrets generate`) for a new store",
                store,
            )
        return Vault(None, None)
    if secrets is None:
        raise SecretsError(
            f"the store ({store}) holds encrypted personal data: set LEDGER_MASTER_KEY and "
            "LEDGER_INDEX_KEY (or LEDGER_KEY_FILE) to the keys it was created with"
        )
    vault = _vault(db, secrets)
    wrong = vault.matches(row["index_check"], base64.b64decode(row["master_check"]))
    if wrong is not None:
        raise SecretsError(f"{wrong} ({store})")
    return vault


def _vault(db: Database, secrets: Secrets) -> Vault:
    vault = Vault(secrets, SQLKeyStore(db))
    vault.sources = SQLEventSource(db, db.backend.events_table)
    return vault


def _now() -> str:
    return datetime.now(UTC).isoformat()
