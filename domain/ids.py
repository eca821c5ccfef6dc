"""The names things are stored under. Streams: deterministic ids, so two processes that
receive callbacks for one message append to one aggregate. Classes: topics ("module:QualName"),
which every store holds; the first events were written when the domain was the module
`callback_ledger.domain`, so every persisted class states its topic in that spelling."""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from uuid import UUID, uuid5

NAMESPACE = UUID("6f0b7c1e-3a52-4b7e-9d6a-2c1f0e8a9b34")
# ULIDs are written in Crockford's base32 (no I, L, O, U). Its decoders also take those as 1,
# 1, 0 and V; an id with them is not one Sinch wrote, so it is hashed whole, not read as a time.
# ASCII only: upper() would lengthen some other letters (ß -> SS).
ULID = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}", re.ASCII | re.IGNORECASE)
# Crockford's digits -> the ones int(..., 32) reads.
TO_BASE32 = str.maketrans("0123456789ABCDEFGHJKMNPQRSTVWXYZ", "0123456789abcdefghijklmnopqrstuv")


def stored(module: str, qualname: str) -> str:
    """The topic of class `qualname` in `domain/<module>.py`, as stores hold it."""
    return f"callback_ledger.domain.{module}:{qualname}"


# A message whose id is a ULID (as Sinch's are) is named after every other stream: this prefix,
# the ULID's milliseconds, then the hashed name. Its stream then goes in at the end of the log's
# primary key rather than at a random place, so each insert touches the pages the last ones did
# (a PostgreSQL index splits a page filled in its middle and leaves both halves half full).
TAIL_PREFIX = b"\xff" * 4


# A message's callbacks arrive close together, and the library derives the id again when it
# creates the aggregate: a small cache saves the hashing.
@lru_cache(maxsize=50_000)
def message_id(project_id: str, message_id: str) -> UUID:
    """The stream of a message: for a ULID its milliseconds first (after TAIL_PREFIX), so
    streams are made in time order; other ids are hashed whole. Not an RFC 9562 layout: its
    version bits would break the order."""
    hashed = uuid5(NAMESPACE, f"message\x1f{project_id}\x1f{message_id}")
    millis = ulid_millis(message_id)
    if millis is None:
        return hashed
    return UUID(bytes=TAIL_PREFIX + millis.to_bytes(6, "big") + hashed.bytes[:6])


def ulid_millis(text: str) -> int | None:
    """The milliseconds a ULID (Sinch's message ids) was made at, or None for another id."""
    if ULID.fullmatch(text) is None:
        return None
    return int(text[:10].upper().translate(TO_BASE32), 32)


@lru_cache(maxsize=50_000)
def contact_id(project_id: str, contact_key: str) -> UUID:
    return uuid5(NAMESPACE, f"contact\x1f{project_id}\x1f{contact_key}")


def body_hash(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def body_id(kind: str, body_hash: str) -> UUID:
    return uuid5(NAMESPACE, f"{kind}\x1f{body_hash}")
