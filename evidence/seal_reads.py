"""Reading the seal chain back: its head (GET /seal) and `verify`, which streams the seals and
the events a page at a time (evidence.verify.Verifier), in portable SQL on either database."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from evidence import verify as seal
from store.backend import Database

PAGE = 2000
SEAL_COLUMNS = ", ".join(seal.COLUMNS)


def head(db: Database) -> seal.Seal | None:
    """The last seal: what an operator records elsewhere."""
    with db.read() as cur:
        rows = cur.tuples(f"SELECT {SEAL_COLUMNS} FROM {seal.TABLE} ORDER BY position DESC LIMIT 1")
    return seal.Seal.from_row(rows[0]) if rows else None


def seals(db: Database, since: int, upto: int) -> Iterator[seal.Seal]:
    """The seals from the one covering notification id `since`, up to position `upto`."""
    rows = _pages(db, f"SELECT {SEAL_COLUMNS} FROM {seal.TABLE}", "position", since - 1, upto)
    return (seal.Seal.from_row(row) for row in rows)


def events(db: Database, table: str, after: int, upto: int) -> Iterator[tuple[Any, ...]]:
    """(notification id, stream, version, topic, state) after `after`, up to `upto`."""
    id_column = db.backend.log_id_column
    select = f"SELECT {id_column}, originator_id, originator_version, topic, state FROM {table}"
    return _pages(db, select, id_column, after, upto)


def _pages(db: Database, select: str, key: str, after: int, upto: int) -> Iterator[tuple[Any, ...]]:
    """The rows of `select` with `key` (its first column) after `after`, up to `upto`, in
    order, read a page at a time."""
    while True:
        with db.read() as cur:
            rows = cur.tuples(
                f"{select} WHERE {key} > ? AND {key} <= ? ORDER BY {key} LIMIT ?",
                [after, upto, PAGE],
            )
        yield from (tuple(row) for row in rows)
        if len(rows) < PAGE:
            return
        after = int(rows[-1][0])


def verify(
    db: Database, events_table: str, since: int = 0, expect: tuple[int, bytes] | None = None
) -> seal.Verified | seal.Problem:
    """The chain recomputed from the first seal (or the one covering notification id `since`,
    trusting the seal before it) to the head as it is when this starts; with `expect`, a head
    recorded elsewhere (position, hash) must be one of the seals verified. Events after the
    last seal are unsealed: the newest event is read before the last seal, and a batch's seal
    commits with its events, so a batch the ledger commits meanwhile is never taken for one."""
    with db.read() as cur:
        newest = int(
            cur.tuples(f"SELECT MAX({db.backend.log_id_column}) FROM {events_table}")[0][0] or 0
        )
    last = head(db)
    if last is None:
        found: seal.Verified | seal.Problem = seal.Verifier().run(
            [], events(db, events_table, 0, newest)
        )
    elif (first := next(seals(db, since, last.position), None)) is None:
        # `since` is past the last seal: only what came after it is left to check.
        after = max(since - 1, last.position)
        found = seal.Verifier().run([], events(db, events_table, after, newest))
        if isinstance(found, seal.Verified):
            found = seal.Verified(last, 0, 0, since)
    else:
        # From the first seal, events before its first id are checked too: none may be unsealed.
        start = first.first_id - 1 if since > 0 else 0
        found = seal.Verifier().run(
            seals(db, since, last.position),
            events(db, events_table, start, max(newest, last.position)),
            trusted_previous=since > 0,
        )
    if expect is None or isinstance(found, seal.Problem):
        return found
    return _recorded_head(db, found, *expect)


def _recorded_head(
    db: Database, found: seal.Verified, position: int, digest: bytes
) -> seal.Verified | seal.Problem:
    """A head recorded elsewhere against the chain just verified."""
    with db.read() as cur:
        rows = cur.tuples(f"SELECT seal FROM {seal.TABLE} WHERE position = ?", [position])
    if found.head is None or position < found.start or position > found.head.position:
        why = "it is outside the seals verified"
    elif not rows:
        why = "no seal has that position (seals or events were removed)"
    elif bytes(rows[0][0]) != digest:
        why = f"the chain holds {bytes(rows[0][0]).hex()} there (it was rewritten)"
    else:
        return found
    return seal.Problem(
        "seal_mismatch", None, position, f"the head recorded elsewhere ({digest.hex()}): {why}"
    )
