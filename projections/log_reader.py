"""Events as the projections read them: decoded straight from the notification log's JSON,
without rebuilding domain objects (the projections need only the state)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import orjson
from eventsourcing.utils import get_topic

from domain.callbacks import UnrecognisedCallback
from domain.contact import Contact
from domain.erasure import Erasure
from domain.message import Message
from store import envelope, seal, spellings
from store.backend import Backend, Cursor
from store.compression import inflate, state_compressor
from store.vault import Vault, plaintext

MESSAGE_REGISTERED = get_topic(Message.Registered)  # type: ignore[attr-defined]
DELIVERY_REPORTED = get_topic(Message.DeliveryReported)
MESSAGE_SUBMITTED = get_topic(Message.Submitted)
UNRECOGNISED_RECEIVED = get_topic(UnrecognisedCallback.Received)  # type: ignore[attr-defined]
# A new message's registration and first report in one event: read as both.
FIRST_REPORTED = get_topic(Message.FirstReported)
REPORTS = frozenset({DELIVERY_REPORTED, FIRST_REPORTED})
CONSENT_REPORTED = get_topic(Contact.ConsentReported)
ERASED = get_topic(Erasure.Erased)  # type: ignore[attr-defined]
INBOUND_RECEIVED = get_topic(Contact.InboundMessageReceived)
CONTACT_MERGED = get_topic(Contact.Merged)
CONTACT_DELETED = get_topic(Contact.Deleted)


# Events read only by their public part in an encrypted store (inbound messages are decrypted:
# their text is read with today's keywords).
PUBLIC_READ = frozenset({*REPORTS, MESSAGE_SUBMITTED, CONSENT_REPORTED, UNRECOGNISED_RECEIVED})


class LoggedEvent(NamedTuple):  # a tuple: replay makes millions of these
    notification_id: int
    topic: str
    originator_id: str
    state: dict[str, Any]


# The seals over the ids `first`..`last` (parameters: first, last, last): those that end in
# that range, and the first one ending at or after `last`; two walks along the primary key.
COVERING = (
    f"SELECT first_id, position FROM {seal.TABLE} WHERE position >= ? AND position < ? "
    "UNION ALL SELECT first_id, position FROM (SELECT first_id, position FROM "
    f"{seal.TABLE} WHERE position >= ? ORDER BY position LIMIT 1) AS straddling "
    "ORDER BY position"
)


class UnsealedEvent(Exception):
    """An event of the log that no seal covers: the ledger seals every batch in the
    transaction that writes it, so this one is not the ledger's and is not applied.
    `before`: the page up to it (last notification id read, events)."""

    def __init__(
        self, notification_id: int, stream: str, topic: str, before: tuple[int, list[LoggedEvent]]
    ) -> None:
        self.event = LoggedEvent(notification_id, topic, stream, {})
        self.before = before
        super().__init__(f"no seal covers event {notification_id}: {seal.NOT_THE_LEDGERS}")


class EventLog:
    """The library's events table, read in notification order inside the projector's own
    transaction, so the page and the position share one snapshot (and on SQLite the write lock
    is not held while waiting on the library's writer)."""

    def __init__(self, table: str, backend: Backend, vault: Vault | None = None) -> None:
        self.table = table
        self.vault = vault if vault is not None else plaintext()
        self.id_column = backend.log_id_column
        self.id_text = backend.log_id_text
        self.as_text = backend.log_text

    def head(self, cur: Cursor) -> int:
        row = cur.execute(f"SELECT MAX({self.id_column}) AS head FROM {self.table}").fetchone()
        return int(row["head"] or 0) if row else 0

    def has_events_after(self, cur: Cursor, after: int, topics: frozenset[str], upto: int) -> bool:
        stored = spellings.spellings(topics)
        row = cur.execute(
            f"SELECT 1 AS found FROM {self.table} WHERE {self.id_column} > ? AND "
            f"{self.id_column} <= ? AND topic IN ({', '.join('?' * len(stored))}) LIMIT 1",
            [after, upto, *stored],
        ).fetchone()
        return row is not None

    def page(
        self, cur: Cursor, after: int, limit: int, topics: frozenset[str], stop: int | None = None
    ) -> tuple[int, list[LoggedEvent]]:
        """The last notification id read (`after` when none) and the events of `topics`."""
        sql = (
            f"SELECT {self.id_column} AS id, {self.id_text} AS originator_id, topic, state "
            f"FROM {self.table} "
            f"WHERE {self.id_column} > ?"
        )
        params: list[Any] = [after]
        if stop is not None:
            sql += f" AND {self.id_column} <= ?"
            params.append(stop)
        rows = cur.tuples(sql + f" ORDER BY {self.id_column} LIMIT ?", [*params, limit])
        if not rows:
            return after, []
        self._check_sealed(cur, rows, after, topics)
        return int(rows[-1][0]), self._events(rows, topics)

    def _check_sealed(
        self, cur: Cursor, rows: Sequence[Sequence[Any]], after: int, topics: frozenset[str]
    ) -> None:
        """Raises UnsealedEvent at the first of `rows` that no seal covers. The seals are read
        after the page and commit with their batch, so every batch of the page has its seal."""
        first, last = int(rows[0][0]), int(rows[-1][0])
        seals = cur.tuples(COVERING, [first, last, last])
        covering = iter(seals)
        current = next(covering, None)
        for i, (id_, stream, topic, _) in enumerate(rows):
            while current is not None and int(current[1]) < int(id_):
                current = next(covering, None)
            if current is None or int(current[0]) > int(id_):
                good = rows[:i]
                before = (int(good[-1][0]) if good else after, self._events(good, topics))
                raise UnsealedEvent(
                    int(id_), self._stream_text(stream), spellings.read(str(topic))[:200], before
                )

    def _stream_text(self, stream: Any) -> str:
        try:
            return self.as_text(stream)
        except (ValueError, TypeError, AttributeError):
            return "(not a UUID)"

    def part_page(
        self,
        cur: Cursor,
        after: int,
        limit: int,
        topics: frozenset[str],
        stop: int,
        part: int,
        parts: int,
    ) -> tuple[int, list[LoggedEvent]]:
        """As `page`, for part `part` of `parts` of the streams (by a byte of the stream id),
        filtered in PostgreSQL: the events of the next `limit * parts` ids, and that range's
        end (at most `stop`). A range, not a LIMIT, keeps the plan a walk along the id index."""
        upper = min(after + limit * parts, stop)
        sql = (
            f"SELECT notification_id, originator_id::text, topic, state FROM {self.table} "
            "WHERE notification_id > ? AND notification_id <= ? AND topic = ANY(?)"
        )
        params: list[Any] = [after, upper, spellings.spellings(topics)]
        if parts > 1:
            sql += " AND mod(get_byte(uuid_send(originator_id), 15), ?) = ?"
            params += [parts, part]
        rows = cur.tuples(sql + " ORDER BY notification_id", params)
        if rows:
            self._check_sealed(cur, rows, after, topics)
        return max(upper, after), self._events(rows, topics)

    def _events(self, rows: Sequence[Sequence[Any]], topics: frozenset[str]) -> list[LoggedEvent]:
        as_text = self.as_text
        vault = self.vault
        read = spellings.read
        rows = [(id_, stream, read(topic), state) for id_, stream, topic, state in rows]
        if not vault.encrypted:
            return [
                LoggedEvent(int(id_), topic, as_text(originator_id), decode_state(state))
                for id_, originator_id, topic, state in rows
                if topic in topics
            ]
        # An erasure (perhaps by another process): stop using its subjects' keys now.
        for row in rows:
            if row[2] == ERASED:
                vault.forget(decode_state(row[3]).get("subjects") or ())
        # Most events are read from their public part alone (PUBLIC_READ); the rest decrypted,
        # with the page's data keys loaded in one query.
        wanted = [row for row in rows if row[2] in topics]
        states = [public_enough(bytes(row[3]), row[2]) for row in wanted]
        closed = [bytes(r[3]) for r, s in zip(wanted, states, strict=True) if s is None]
        vault.prefetch(envelope.key_ids(closed))
        return [
            LoggedEvent(
                int(id_),
                topic,
                as_text(originator_id),
                state if state is not None else decode_state(raw, vault, topic),
            )
            for (id_, originator_id, topic, raw), state in zip(wanted, states, strict=True)
        ]


def public_enough(state: bytes, topic: str) -> dict[str, Any] | None:
    """An encrypted event's public state when that is enough (PUBLIC_READ), else None."""
    if topic not in PUBLIC_READ or not envelope.is_sealed(state):
        return None
    return envelope.public_state(state, state_compressor(), topic, nul_free=True)


def decode_state(
    state: bytes, vault: Vault | None = None, topic: str | None = None
) -> dict[str, Any]:
    """An event's state; an encrypted one's personal fields opened with `vault`."""
    state = bytes(state)
    if envelope.is_sealed(state):
        return envelope.open_state(
            state, vault or plaintext(), state_compressor(), topic, nul_free=True
        )
    state = inflate(state)
    decoded: dict[str, Any] = orjson.loads(state)
    if envelope.NUL_ESCAPE in state:
        decoded = envelope.without_nul(decoded)
    return decoded
