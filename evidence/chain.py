"""Evidence bundles' chain (README, "Evidence"): the stored rows of chosen events, the seals that
cover them with the digests of every event of those batches, and the chain from the first of
those seals to the head; and `check`, which recomputes all of it from the bundle alone, with
store.seal's encoding and digests (so a bundle holds exactly what `verify` checks)."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from evidence import seal_reads
from store import seal
from store.backend import Database
from store.ledger import Ledger

FORMAT = "callback-ledger evidence"
VERSION = 2
# What a bundle and its parts hold: nothing else (a field no check recomputes is refused).
FIELDS = frozenset(
    {"format", "version", "subject", "keywords", "keys", "head", "consent_facts", "messages",
     "events", "seals"}
)  # fmt: skip
HEAD_FIELDS = frozenset({"position", "hash"})
SEAL_FIELDS = frozenset({"position", "first_id", "events", "batch", "previous", "seal"})
EVENT_FIELDS = frozenset(
    {"reference", "notification_id", "stream", "version", "topic", "state", "digest", "callback"}
)


@dataclass(frozen=True)
class StoredEvent:
    """One event's stored row, as sealed."""

    notification_id: int
    stream: UUID
    version: int
    topic: str
    state: bytes

    def digest(self) -> bytes:
        return seal.event_digest(self.stream, self.version, self.topic, self.state)

    def as_json(self) -> dict[str, Any]:
        return {
            "notification_id": self.notification_id,
            "stream": str(self.stream),
            "version": self.version,
            "topic": self.topic,
            "state": base64.b64encode(self.state).decode("ascii"),
            "digest": self.digest().hex(),
        }


def stored_event(ledger: Ledger, db: Database, reference: str) -> StoredEvent | None:
    """The stored row behind a reference `<stream>/<key>`, or None."""
    stream_text, _, key = reference.partition("/")
    try:
        stream = UUID(stream_text)
    except ValueError:
        return None
    event = ledger.keyed_event(stream, key)
    if event is None:
        return None
    found = stored_rows(
        ledger, db, "originator_id = ? AND originator_version = ?",
        [ledger.backend.stream_param(stream), int(event.originator_version)],
    )  # fmt: skip
    return found[0] if found else None


def stream_events(ledger: Ledger, db: Database, stream: UUID) -> list[StoredEvent]:
    """The stored rows of one stream, in version order."""
    return stored_rows(ledger, db, "originator_id = ?", [ledger.backend.stream_param(stream)])


def event_at(ledger: Ledger, db: Database, notification_id: int) -> StoredEvent | None:
    found = stored_rows(ledger, db, f"{db.backend.log_id_column} = ?", [notification_id])
    return found[0] if found else None


def stored_rows(ledger: Ledger, db: Database, where: str, params: list[Any]) -> list[StoredEvent]:
    id_column = db.backend.log_id_column
    with db.read() as cur:
        rows = cur.tuples(
            f"SELECT {id_column}, {db.backend.log_id_text}, originator_version, topic, state "
            f"FROM {ledger.events_table} WHERE {where} ORDER BY {id_column}",
            params,
        )
    return [
        StoredEvent(
            int(n), UUID(db.backend.log_text(stream)), int(version), str(topic), bytes(state)
        )
        for n, stream, version, topic, state in rows
    ]


def _seal_json(s: seal.Seal, digests: list[tuple[int, bytes]] | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "position": s.position,
        "first_id": s.first_id,
        "events": s.events,
        "batch": s.batch.hex(),
        "previous": s.previous.hex(),
        "seal": s.seal.hex(),
    }
    if digests is not None:
        out["digests"] = [[n, d.hex()] for n, d in digests]
    return out


def head_of(last: seal.Seal | None) -> dict[str, Any] | None:
    """A bundle's head: the last seal's position and hash (its time is not sealed: left out)."""
    return {"position": last.position, "hash": last.seal.hex()} if last else None


def chain_segment(
    db: Database, events_table: str, included: Iterable[StoredEvent]
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The head now, and the seals from the first covering an included event up to it; those
    covering one carry the digests of all their events."""
    last = seal_reads.head(db)
    ids = sorted({e.notification_id for e in included})
    if last is None or not ids:
        return head_of(last), []
    out: list[dict[str, Any]] = []
    wanted = iter(ids)
    pending: int | None = next(wanted)
    for s in seal_reads.seals(db, ids[0], last.position):
        digests: list[tuple[int, bytes]] | None = None
        if pending is not None and pending <= s.position:
            rows = seal_reads.events(db, events_table, s.first_id - 1, s.position)
            digests = [(int(n), seal.event_digest(*event)) for n, *event in rows]
            while pending is not None and pending <= s.position:
                pending = next(wanted, None)
        out.append(_seal_json(s, digests))
    return head_of(last), out


# ---- checking a bundle, without the database ------------------------------------------------


@dataclass(frozen=True)
class Checked:
    head: dict[str, Any] | None
    events: int
    seals: int


class Mismatch(Exception):
    """The first thing in a bundle that does not hold."""


def check(bundle: Mapping[str, Any]) -> Checked:
    """Recomputes the chain from the first seal's `previous` to the head, then every event's
    digest from its stored bytes against its seal's list; every cited reference must be an
    included event. Raises `Mismatch` naming the first thing that does not hold."""
    if bundle.get("format") != FORMAT or bundle.get("version") != VERSION:
        raise Mismatch(f"not a {FORMAT} bundle of version {VERSION}")
    only(bundle, FIELDS, "")
    seals = bundle["seals"]
    previous: str | None = None
    for i, s in enumerate(seals):
        only(s, SEAL_FIELDS | {"digests"}, f"seals[{i}].")
        where = f"seal {s['position']}"
        if previous is not None and s["previous"] != previous:
            raise Mismatch(f"{where}: its previous hash is not the seal before it ({previous})")
        batch = bytes.fromhex(s["batch"])
        if "digests" in s:
            listed = s["digests"]
            if len(listed) != s["events"]:
                raise Mismatch(f"{where}: lists {len(listed)} digests for {s['events']} events")
            ids = [int(n) for n, _ in listed]
            if ids != sorted(ids) or (ids and (ids[0] < s["first_id"] or ids[-1] > s["position"])):
                raise Mismatch(f"{where}: its digests are not its events in notification order")
            if seal.batch_digest(bytes.fromhex(d) for _, d in listed) != batch:
                raise Mismatch(f"{where}: the batch digest does not match its events' digests")
        if seal.chain(bytes.fromhex(s["previous"]), batch).hex() != s["seal"]:
            raise Mismatch(f"{where}: its hash is not SHA-256(previous || batch)")
        previous = s["seal"]
    head = bundle.get("head")
    if head is not None:
        only(head, HEAD_FIELDS, "head.")
    if seals and (head is None or head["hash"] != previous
                  or head["position"] != seals[-1]["position"]):  # fmt: skip
        raise Mismatch("head: it is not the last seal of the chain")
    digest_at: dict[int, str] = {}
    for s in seals:
        for n, d in s.get("digests") or []:
            digest_at[int(n)] = d
    by_reference = {}
    last = 0
    for i, e in enumerate(bundle["events"]):
        only(e, EVENT_FIELDS, f"events[{i}].")
        n = e["notification_id"]
        if n <= last:
            raise Mismatch(f"events[{i}].notification_id: the events are not each once, in "
                           "notification order")  # fmt: skip
        last = n
        state = base64.b64decode(e["state"], validate=True)
        found = seal.event_digest(e["stream"], e["version"], e["topic"], state).hex()
        if n not in digest_at:
            raise Mismatch(f"event {n} ({e['reference']}): no seal in the bundle lists it")
        if digest_at[n] != found:
            raise Mismatch(f"event {n} ({e['reference']}): its stored bytes do not match the "
                           "digest its seal's batch lists")  # fmt: skip
        if e["digest"] != found:
            raise Mismatch(f"events[{i}].digest: it is not the digest of its stored bytes")
        by_reference[e["reference"]] = n
    for reference in cited(bundle):
        if reference not in by_reference:
            raise Mismatch(f"reference {reference}: the bundle holds no event for it")
    return Checked(head, len(bundle["events"]), len(seals))


def only(part: Mapping[str, Any], fields: frozenset[str], where: str) -> None:
    """A part of a bundle holds no field beyond `fields` (what no check recomputes)."""
    extra = sorted(set(part) - fields)
    if extra:
        raise Mismatch(f"{where}{extra[0]}: not a field a bundle holds (nothing checks it)")


def cited(bundle: Mapping[str, Any]) -> list[str]:
    """The references the bundle's consent facts and message timelines cite."""
    refs = [f["source_ref"] for f in bundle["consent_facts"]]
    refs += [r["reference"] for m in bundle["messages"] for r in m["timeline"]]
    return list(dict.fromkeys(refs))
