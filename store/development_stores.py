"""A development build's store (one without a format version, store.format_version) read for
`callback-ledger export`, and for nothing else: how its events' states read, from which the
export takes each callback as received with its receipt. The encodings only those builds wrote
live here:

- an encrypted event whose public and personal parts are each a zstd frame of their own
  (MAGIC_V1: no dictionary byte), the ciphertext being AES-GCM of the personal part's frame;
- data keys whose id and wrapped bytes are hex and base64 text.

The rest (plain or compressed JSON, today's envelope) is read as store.envelope reads it.
Topics and stream names do not matter here: a callback is found by its receipt."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from store import envelope
from store.backend import Database, select_by_keys
from store.compression import inflate, state_compressor
from store.data_keys import META, TABLE
from store.vault import Secrets, Vault, plaintext

MAGIC_V1, MAGIC_V1_LIBRARY = b"CLE\x01", b"CLE\x02"
_HEAD_V1 = struct.Struct(">4sI")


class _Keys:
    """The data keys, as bytes or (the earliest builds) as hex and base64 text."""

    def __init__(self, db: Database) -> None:
        self.db = db
        with db.read() as cur:
            found = cur.backend.column_type(cur, TABLE, "key_id")
        self.text = found is not None and found.lower() == "text"

    def load(self, key_ids: Sequence[bytes]) -> dict[bytes, bytes]:
        params = [(k.hex() if self.text else k,) for k in key_ids]
        with self.db.read() as cur:
            rows = select_by_keys(cur, TABLE, ("key_id", "wrapped"), ("key_id",), params)
        if self.text:
            return {bytes.fromhex(r["key_id"]): base64.b64decode(r["wrapped"]) for r in rows}
        return {bytes(r["key_id"]): bytes(r["wrapped"]) for r in rows}


def decoder(db: Database, secrets: Secrets | None) -> Callable[[bytes], dict[str, Any]]:
    """How this store's event states read; an encrypted store's personal fields opened with
    `secrets` (None where a key was destroyed)."""
    with db.read() as cur:
        encrypted = cur.execute(f"SELECT 1 FROM {META}").fetchone() is not None
    vault = Vault(secrets, _Keys(db)) if encrypted and secrets is not None else plaintext()
    return lambda state: _decoded(state, vault)


def _decoded(state: bytes, vault: Vault) -> dict[str, Any]:
    if state[:4] in (MAGIC_V1, MAGIC_V1_LIBRARY):
        return _two_frames(state, vault)
    if envelope.is_sealed(state):
        return envelope.open_state(state, vault, state_compressor())
    decoded: dict[str, Any] = orjson.loads(inflate(state))
    return decoded


def _two_frames(state: bytes, vault: Vault) -> dict[str, Any]:
    _, length = _HEAD_V1.unpack_from(state)
    end = _HEAD_V1.size + length
    zstd = state_compressor()
    loads = json.loads if state[:4] == MAGIC_V1_LIBRARY else orjson.loads
    public: dict[str, Any] = loads(zstd.decompress(state[_HEAD_V1.size : end]))
    tail = vault.decrypt(state[end:]) if vault.encrypted else None
    if tail is None:
        return envelope.erased(public)
    private: dict[str, Any] = loads(zstd.decompress(tail))
    receipt = private.pop("callback", None)
    public.update(private)
    if receipt is not None and isinstance(public.get("callback"), dict):
        public["callback"].update(receipt)
    return public
