"""An event's stored state with its personal fields encrypted (see store.vault).

    MAGIC | dictionary (1 byte) | public length (4 bytes, big-endian) | public
          | key id (16) | nonce (12) | ciphertext

The event's JSON without its personal fields (plus `subject`, a blind index of whom they are
about) and the personal fields' JSON are one zstd frame (`compress_pair`) cut after the first:
`public` decompresses alone, the ciphertext (AES-GCM) continues the frame. So the public
fields stay readable for ever, the personal ones (`PRIVATE`, per event type) only while their
data key exists."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from eventsourcing.utils import get_topic

from domain.callbacks import QuarantinedCallback, UnrecognisedCallback
from domain.contact import Contact
from domain.keywords import Reading
from domain.message import Message
from store import spellings
from store import vault as v
from store.compression import StateCompressor

MAGIC = b"CLE\x03"  # neither JSON ("{") nor zstd (0x28) starts with it
# Both parts written by the library's encoder (a value orjson does not take): read by `json`.
MAGIC_LIBRARY = b"CLE\x04"
MAGICS = (MAGIC, MAGIC_LIBRARY)
_HEAD = struct.Struct(">4sBI")
# The receipt's personal fields; its arrival time and signature check stay public.
RECEIPT_PRIVATE = ("raw", "headers")


@dataclass(frozen=True)
class Kind:
    """How one event type is split: its personal top-level fields, and its data class."""

    fields: tuple[str, ...]
    consent: bool = False  # its data class is consent evidence
    inbound: bool = False  # consent evidence when its text is a keyword or reads like one
    # Its metadata is named in public by a keyed hash (`metadata_index`), as read tables name it.
    metadata: bool = False


METADATA_INDEX = "metadata_index"
_MESSAGE = Kind(("identity", "metadata"), metadata=True)
PRIVATE: dict[str, Kind] = {
    get_topic(Message.DeliveryReported): _MESSAGE,
    get_topic(Message.FirstReported): _MESSAGE,
    get_topic(Message.Submitted): _MESSAGE,
    get_topic(Contact.ConsentReported): Kind(("identity",), consent=True),
    get_topic(Contact.InboundMessageReceived): Kind(("identity", "text"), inbound=True),
    # Their identities are named in public (blind indexes), as received in `numbers`.
    get_topic(Contact.Merged): Kind(("numbers",), consent=True),
    get_topic(Contact.Deleted): Kind(("numbers",), consent=True),
    get_topic(UnrecognisedCallback.Received): Kind(()),  # type: ignore[attr-defined]
    get_topic(QuarantinedCallback.Quarantined): Kind(("problems", "raw_base64")),  # type: ignore[attr-defined]
    get_topic(QuarantinedCallback.Resolved): Kind(("note",)),  # type: ignore[attr-defined]
}
# Events are looked up by topic as stored, too (store.spellings).
PRIVATE.update({spellings.written(topic): kind for topic, kind in list(PRIVATE.items())})


def subject_of(vault: v.Vault, state: dict[str, Any]) -> str:
    """Whom an event's personal fields are about: its channel identity, else its contact,
    else one named in its (uninterpreted) body, else nobody."""
    identity = state.get("identity")
    if isinstance(identity, str) and identity.strip():
        return vault.index(state.get("channel"), identity)
    contact = state.get("contact_id")
    if isinstance(contact, str) and contact:
        return vault.contact_subject(str(state.get("project_id") or ""), contact)
    callback = state.get("callback")
    raw = callback.get("raw") if isinstance(callback, dict) else None
    named = named_in_body(raw) if isinstance(raw, str) else None
    if named is None:
        return v.UNATTRIBUTED
    channel, identity, contact = named
    if identity:
        return vault.index(channel, identity)
    return vault.contact_subject(str(state.get("project_id") or ""), contact or "")


def named_in_body(raw: str, budget: int = 200) -> tuple[str | None, str | None, str | None] | None:
    """The first channel identity (channel, identity) or contact id a JSON body names, breadth
    first in at most `budget` objects: so an erasure reaches the callbacks kept uninterpreted."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    queue: list[Any] = [body]
    contact: str | None = None
    while queue and budget > 0:
        budget -= 1
        node = queue.pop(0)
        if isinstance(node, list):
            queue.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        identity, channel = node.get("identity"), node.get("channel")
        if isinstance(identity, str) and identity.strip():
            return (channel if isinstance(channel, str) else None), identity, None
        found = node.get("contact_id")
        if contact is None and isinstance(found, str) and found:
            contact = found
        queue.extend(item for item in node.values() if isinstance(item, dict | list))
    return (None, None, contact) if contact else None


def _received(state: dict[str, Any]) -> str:
    callback = state.get("callback")
    if isinstance(callback, dict) and isinstance(callback.get("received_at"), str):
        return str(callback["received_at"])
    at = state.get("at")  # a quarantine resolution's time
    return at if isinstance(at, str) else ""


def split(
    kind: Kind,
    state: dict[str, Any],
    vault: v.Vault,
    classify: Callable[[str | None], Reading],
) -> tuple[dict[str, Any], dict[str, Any], tuple[str, str, str]]:
    """(public fields, personal fields, (subject, data class, period))."""
    public = dict(state)
    private: dict[str, Any] = {f: public.pop(f) for f in kind.fields if f in public}
    callback = public.get("callback")
    if isinstance(callback, dict):
        public["callback"] = kept = dict(callback)
        private["callback"] = {f: kept.pop(f) for f in RECEIPT_PRIVATE if f in kept}
    subject = subject_of(vault, state)
    public["subject"] = subject
    if kind.metadata:
        metadata = state.get("metadata")
        public[METADATA_INDEX] = (
            vault.metadata_name(metadata) if isinstance(metadata, str) else None
        )
    consent = kind.consent
    if kind.inbound:
        # The text goes with its key; what it said as a consent fact stays public.
        reading = classify(state.get("text"))
        if reading.action is not None or reading.review is not None:
            consent = True
            public["reading"] = {
                "action": reading.action,
                "keyword": reading.keyword,
                "review": reading.review,
            }
    received = _received(state)
    period = received[:7] if len(received) >= 7 else "0000-00"
    return public, private, (subject, v.CONSENT if consent else v.MESSAGES, period)


def seal(
    public: bytes,
    private: bytes,
    key_id: bytes,
    key: bytes,
    vault: v.Vault,
    zstd: StateCompressor,
    library: bool = False,
) -> bytes:
    head, tail = zstd.compress_pair(public, private)
    magic = MAGIC_LIBRARY if library else MAGIC
    return _HEAD.pack(magic, zstd.version, len(head)) + head + vault.encrypt(key_id, key, tail)


def is_sealed(state: bytes) -> bool:
    return state[:4] in MAGICS


def _layout(state: bytes) -> tuple[int, int, int]:
    """(dictionary; where the public piece starts; where it ends and the key id starts)."""
    _, version, length = _HEAD.unpack_from(state)
    return version, _HEAD.size, _HEAD.size + length


def key_id(state: bytes) -> bytes:
    _, _, start = _layout(state)
    return bytes(state[start : start + v.KEY_ID_BYTES])


def key_ids(states: Iterable[bytes]) -> list[bytes]:
    return [key_id(s) for s in states if s[:4] in MAGICS]


def public_json(state: bytes, zstd: StateCompressor) -> bytes:
    """The public part's JSON (no key needed)."""
    version, start, end = _layout(state)
    return zstd.decompress_pair(version, bytes(state[start:end]))[0]


def parts_json(state: bytes, vault: v.Vault, zstd: StateCompressor) -> tuple[bytes, bytes | None]:
    """The public part's JSON, and the personal part's (None without its key)."""
    version, start, end = _layout(state)
    head = bytes(state[start:end])
    tail = vault.decrypt(bytes(state[end:])) if vault.encrypted else None
    return zstd.decompress_pair(version, head, tail)


# PostgreSQL text cannot hold a NUL character: readers that fill tables ask for U+FFFD in its
# place (`nul_free`), on both backends alike (the raw callback keeps the original).
NUL_ESCAPE = b"\\u0000"


def without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {without_nul(k): without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_nul(v) for v in value]
    return value


def open_state(
    state: bytes,
    vault: v.Vault,
    zstd: StateCompressor,
    topic: str | None = None,
    nul_free: bool = False,
) -> dict[str, Any]:
    """The event's state as one object: the public fields, the personal ones while their key
    exists (else `erased`), and `_key`, the data key's id (hex)."""
    public_bytes, plain = parts_json(state, vault, zstd)
    loads = _reader(state)
    public = _loaded(state, public_bytes, loads, nul_free)
    if plain is None:
        return erased(public, topic)
    private: dict[str, Any] = loads(plain)
    if nul_free and NUL_ESCAPE in plain:
        private = without_nul(private)
    receipt = private.pop("callback", None)
    public.update(private)
    if receipt is not None and isinstance(public.get("callback"), dict):
        public["callback"].update(receipt)
    return public


def public_state(
    state: bytes,
    zstd: StateCompressor,
    topic: str,
    nul_free: bool = False,
) -> dict[str, Any] | None:
    """The event's public fields alone, as `open_state` gives them; None for a topic not in
    PRIVATE."""
    public = _loaded(state, public_json(state, zstd), _reader(state), nul_free)
    return public if topic in PRIVATE else None


def _reader(state: bytes) -> Callable[[bytes], Any]:
    return json.loads if state[:4] == MAGIC_LIBRARY else orjson.loads


def _loaded(
    state: bytes,
    public_bytes: bytes,
    loads: Callable[[bytes], Any],
    nul_free: bool,
) -> dict[str, Any]:
    public: dict[str, Any] = loads(public_bytes)
    if nul_free and NUL_ESCAPE in public_bytes:
        public = without_nul(public)
    public["_key"] = key_id(state).hex()
    return public


ANY_PRIVATE = ("identity", "metadata", "text", "problems", "raw_base64", "note", "numbers")


def erased(public: dict[str, Any], topic: str | None = None) -> dict[str, Any]:
    """An event without its personal fields' key: those fields None."""
    kind = PRIVATE.get(topic or "")
    for name in kind.fields if kind else ANY_PRIVATE:
        public.setdefault(name, None)
    callback = public.get("callback")
    if isinstance(callback, dict):
        callback.setdefault("raw", None)
        callback.setdefault("headers", {})
        callback["erased"] = True
    public["erased"] = True
    return public


def dumps(state: dict[str, Any]) -> bytes:
    """As the library's transcoder would write it (datetimes tagged)."""
    return orjson.dumps(state, default=_tagged, option=orjson.OPT_PASSTHROUGH_DATETIME)


def _tagged(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"_type_": "datetime_iso", "_data_": value.isoformat()}
    raise TypeError(f"{type(value).__name__} is not one of the fast path's types")
