"""Deterministic aggregate ids: the same provider ids always name the same stream, so two
processes that receive callbacks for one message append to one aggregate."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from uuid import UUID, uuid5

NAMESPACE = UUID("6f0b7c1e-3a52-4b7e-9d6a-2c1f0e8a9b34")


# A message's callbacks arrive close together, and the library derives the id again when it
# creates the aggregate: a small cache saves the hashing.
@lru_cache(maxsize=50_000)
def message_id(project_id: str, message_id: str) -> UUID:
    return uuid5(NAMESPACE, f"message\x1f{project_id}\x1f{message_id}")


@lru_cache(maxsize=50_000)
def contact_id(project_id: str, contact_key: str) -> UUID:
    return uuid5(NAMESPACE, f"contact\x1f{project_id}\x1f{contact_key}")


def body_hash(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def body_id(kind: str, body_hash: str) -> UUID:
    return uuid5(NAMESPACE, f"{kind}\x1f{body_hash}")
