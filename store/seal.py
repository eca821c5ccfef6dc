"""The seal chain, written by the recorders in each batch's transaction, so an alteration of the
log behind the service's back can be shown (evidence.verify).

Each event is hashed over its stored bytes (`encode`); a batch's digest is the SHA-256 of its
events' digests, and `seal_n = SHA-256(seal_{n-1} || batch digest)` from 32 zero bytes. The
row (`ledger_seals`) also keeps each event's digest's first 8 bytes (`locator`), which only
name the broken event. Erasure and retention never change stored bytes, so never the chain."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

TABLE = "ledger_seals"
COLUMNS = ("position", "first_id", "events", "batch", "locator", "previous", "seal", "sealed_at")
GENESIS = bytes(32)
LOCATOR_BYTES = 8

_HEAD = struct.Struct(">16sqI")
_LENGTH = struct.Struct(">I")


def stream_bytes(originator_id: Any) -> bytes:
    """A stream id as 16 bytes, however the database returned it (UUID, hex or UUID text)."""
    if isinstance(originator_id, UUID):
        return originator_id.bytes
    return UUID(str(originator_id)).bytes


def encode(originator_id: Any, version: int, topic: str, state: bytes) -> bytes:
    """One stored event's canonical bytes: stream (16), version (8), then topic and state,
    each after its length (4)."""
    name = topic.encode("utf-8")
    return b"".join(
        (_HEAD.pack(stream_bytes(originator_id), version, len(name)), name,
         _LENGTH.pack(len(state)), bytes(state))
    )  # fmt: skip


def event_digest(originator_id: Any, version: int, topic: str, state: bytes) -> bytes:
    return hashlib.sha256(encode(originator_id, version, topic, state)).digest()


def batch_digest(digests: Iterable[bytes]) -> bytes:
    return hashlib.sha256(b"".join(digests)).digest()


def chain(previous: bytes, batch: bytes) -> bytes:
    return hashlib.sha256(previous + batch).digest()


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class Batch:
    events: int
    digest: bytes
    locator: bytes

    @classmethod
    def of(cls, rows: Iterable[tuple[Any, int, str, bytes]]) -> Batch:
        digests = [event_digest(*row) for row in rows]
        return cls(len(digests), batch_digest(digests), locator(digests))


@dataclass(frozen=True)
class Seal:
    position: int  # the last notification id it covers
    first_id: int
    events: int
    batch: bytes
    locator: bytes
    previous: bytes
    seal: bytes
    sealed_at: str

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Seal:
        position, first_id, events, batch, locator, previous, seal, sealed_at = row
        return cls(
            int(position), int(first_id), int(events), bytes(batch), bytes(locator),
            bytes(previous), bytes(seal), str(sealed_at),
        )  # fmt: skip

    def head(self) -> dict[str, Any]:
        """What an operator records elsewhere (GET /seal, `verify`)."""
        return {"position": self.position, "hash": self.seal.hex(), "sealed_at": self.sealed_at}


def sealed(previous: bytes, first_id: int, position: int, batch: Batch) -> Seal:
    """The seal of a batch that follows `previous`."""
    return Seal(
        position, first_id, batch.events, batch.digest, batch.locator, previous,
        chain(previous, batch.digest), now(),
    )  # fmt: skip


def locator(digests: Sequence[bytes]) -> bytes:
    return b"".join(d[:LOCATOR_BYTES] for d in digests)


# Why no seal covering an event is a fault: the ledger seals every batch in the transaction
# that writes it, so an event committed without one was not written by the ledger.
NOT_THE_LEDGERS = "the ledger seals every batch it writes, so it was added behind its back"
