"""Personal data under keys that can be destroyed (crypto-shredding).

The log is append-only and sealed, so personal fields are stored encrypted (store.envelope)
under a data key per subject (a blind index), data class and month; destroying keys (erasure,
retention) makes them unreadable everywhere while the stored bytes and the seal stay as they
are. The master key wraps the data keys (stored in store.data_keys; the master key never is);
the index key names subjects (HMAC-SHA256). A store is encrypted from its creation or never:
a contact known only by its number is named by that number's blind index."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import itertools
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from domain.identity import loose, normalise

KEY_BYTES = 32
KEY_ID_BYTES = 16
# A key id is its creation time (milliseconds, 6 bytes), then random bytes.
KEY_ID_RANDOM = 10
NONCE_BYTES = 12
TAG_BYTES = 16
# Data classes, each with its own retention (service.settings).
CONSENT = "c"
MESSAGES = "m"
# The subject of data that names nobody we can tell (unknown triggers, the quarantine).
UNATTRIBUTED = "u"
# How long a process encrypts with one data key per (subject, class, month), and trusts a key
# it loaded: a key destroyed by another process stops being used (opened) here within this
# time, or at once where the process follows the log (the Erased fact: `forget`).
KEY_REUSE_S = 3600.0
KEY_TRUST_S = 60.0
# Encryptions per nonce prefix (its counter has 4 bytes), and cipher objects kept.
NONCES_PER_PREFIX = 2**31
CIPHERS_KEPT = 256
# Blind indexes kept per process (a dict of this many short strings, emptied when full).
NAMES_KEPT = 16_384
# Sealed text (a projection's copy of a personal value): this prefix, then base64url of key
# id, nonce and ciphertext.
TEXT_PREFIX = "v1."
# A reference to a personal value: this prefix, the notification id of the event holding
# it, a dot, and which of its fields (REFERRED).
REF_PREFIX = "e1."
IDENTITY, METADATA_FIELD, TEXT = "i", "m", "t"
REFERRED = {IDENTITY: "identity", METADATA_FIELD: "metadata", TEXT: "text"}
# The pseudo-channel a message's metadata is named under (no channel of the Conversation API).
METADATA = "METADATA"


class SecretsError(ValueError):
    """The keys are missing, malformed, or not the ones this store was created with."""


def _decode_key(name: str, value: str) -> bytes:
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SecretsError(f"{name} is not base64") from None
    if len(raw) != KEY_BYTES:
        raise SecretsError(f"{name} must be base64 of {KEY_BYTES} random bytes, not {len(raw)}")
    return raw


@dataclass(frozen=True, repr=False)
class Secrets:
    """The master key (and earlier ones accepted while rotating) and the index key; repr
    hides them."""

    master: bytes
    index: bytes
    previous: tuple[bytes, ...] = ()

    def __repr__(self) -> str:
        return "Secrets(<hidden>)"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Secrets | None:
        """From the environment, else from the file LEDGER_KEY_FILE names (`NAME=value`
        lines); None when neither is set."""
        values = {k: env.get(k, "") for k in (MASTER, INDEX, PREVIOUS)}
        path = env.get("LEDGER_KEY_FILE", "").strip()
        if path and not (values[MASTER] or values[INDEX]):
            values.update(read_key_file(Path(path)))
        if not values[MASTER] and not values[INDEX]:
            return None
        for name in (MASTER, INDEX):
            if not values[name].strip():
                raise SecretsError(f"{name} is missing (both keys are needed)")
        previous = tuple(
            _decode_key(PREVIOUS, v) for v in values.get(PREVIOUS, "").split(",") if v.strip()
        )
        return cls(_decode_key(MASTER, values[MASTER]), _decode_key(INDEX, values[INDEX]), previous)


MASTER = "LEDGER_MASTER_KEY"
INDEX = "LEDGER_INDEX_KEY"
PREVIOUS = "LEDGER_PREVIOUS_MASTER_KEYS"


def read_key_file(path: Path) -> dict[str, str]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise SecretsError(f"LEDGER_KEY_FILE {path}: {exc.strerror}") from None
    found: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.strip().partition("=")
        if sep and name.strip() in (MASTER, INDEX, PREVIOUS):
            found[name.strip()] = value.strip().strip("'\"")
    return found


def generate() -> str:
    """A fresh pair, as lines for an environment file or LEDGER_KEY_FILE."""
    master = base64.b64encode(os.urandom(KEY_BYTES)).decode()
    index = base64.b64encode(os.urandom(KEY_BYTES)).decode()
    return f"{MASTER}={master}\n{INDEX}={index}\n"


def write_key_file(path: Path) -> None:
    """A new key file, readable by its owner only; never replaces one (FileExistsError).
    Linked into place once written, so no reader sees it half written."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(generate())
            out.flush()
            os.fsync(out.fileno())
        os.link(temporary, path)
    finally:
        temporary.unlink()


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _b64(raw: bytes) -> str:
    return binascii.b2a_base64(raw, newline=False).translate(_URLSAFE).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def wrap_nonce(key_id: bytes) -> bytes:
    """The nonce a data key is wrapped with (once, when made): the last 12 bytes of its id.
    Two wraps share one only if their times agree modulo about 50 days to the millisecond and
    their 80 random bits match."""
    return key_id[-NONCE_BYTES:]


def period_of(when: datetime) -> str:
    """'YYYY-MM', the month a datum belongs to for retention."""
    return f"{when.year:04d}-{when.month:02d}"


@dataclass(frozen=True, slots=True)
class KeyRow:
    """A data key as stored, wrapped by the master key."""

    key_id: bytes
    subject: str
    klass: str
    period: str
    wrapped: bytes


class KeyStore(Protocol):
    """Where the wrapped data keys live (store.data_keys)."""

    def load(self, key_ids: Sequence[bytes]) -> dict[bytes, bytes]: ...


class EventSource(Protocol):
    """The log's events, opened: where referenced values live (store.data_keys)."""

    def states(self, vault: Vault, ids: Sequence[int]) -> dict[int, Mapping[str, object]]: ...


def reference(notification_id: int, field: str) -> str:
    """What a read table holds to show an event's personal value (`field`: IDENTITY,
    METADATA_FIELD or TEXT): unreadable exactly when the event's own copy is."""
    return f"{REF_PREFIX}{notification_id}.{field}"


@dataclass
class _Current:
    key_id: bytes
    key: bytes
    made: float


class Vault:
    """Encrypts and decrypts personal data for one store. In a plaintext store (`encrypted`
    False) values pass through and identities are named by their normalised form."""

    def __init__(
        self, secrets: Secrets | None, keys: KeyStore | None, cache_size: int = 100_000
    ) -> None:
        self.secrets = secrets
        self.keys = keys
        self.encrypted = secrets is not None and keys is not None
        self._master = AESGCM(secrets.master) if secrets else None
        self._previous = [AESGCM(k) for k in secrets.previous] if secrets else []
        self._current: OrderedDict[tuple[str, str, str], _Current] = OrderedDict()
        self._pending: dict[bytes, KeyRow] = {}
        # key id -> (the key, or None once known destroyed; when loaded).
        self._open: OrderedDict[bytes, tuple[bytes | None, float]] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._prefix = os.urandom(NONCE_BYTES - 4)
        self._counter = itertools.count()
        self._ciphers: dict[bytes, AESGCM] = {}
        self._names: dict[tuple[str | None, str], str] = {}
        # Where references are resolved: set by the Ledger.
        self.sources: EventSource | None = None
        # Keyed once: each name copies it.
        self._index_mac = hmac.new(secrets.index, digestmod=hashlib.sha256) if secrets else None

    def _hmac(self, *parts: str) -> str:
        assert self._index_mac is not None
        mac = self._index_mac.copy()
        mac.update("\x1f".join(parts).encode("utf-8", "surrogatepass"))
        return _b64(mac.digest()[:16])

    def index(self, channel: str | None, identity: str) -> str:
        """A channel identity's name: its blind index, or its normalised form in a plaintext
        store."""
        if not self.encrypted:
            return normalise(channel, identity)
        slot = (channel, identity)
        name = self._names.get(slot)
        if name is None:
            # Metadata keeps the rule its stored names were made with (domain.identity.loose).
            normal = loose(identity) if channel == METADATA else normalise(channel, identity)
            name = "b." + self._hmac("identity", (channel or "").upper(), normal)
            if len(self._names) >= NAMES_KEPT:
                self._names.clear()
            self._names[slot] = name
        return name

    def metadata_name(self, value: str) -> str:
        """The name a message's metadata is found by: a keyed hash (compared as a channel
        identity is: readers compare the opened value too), or the value in a plaintext
        store."""
        return self.index(METADATA, value) if self.encrypted else value

    def contact_subject(self, project_id: str, contact_id: str) -> str:
        """The subject of a contact's data that names no channel identity."""
        if not self.encrypted:
            return f"contact:{project_id}:{contact_id}"
        return "c." + self._hmac("contact", project_id, contact_id)

    def check_values(self) -> tuple[str, bytes]:
        """What the store keeps to recognise its keys: their HMAC and encryption of a text."""
        assert self.secrets is not None and self._master is not None
        nonce = os.urandom(NONCE_BYTES)
        return self._hmac("check"), nonce + self._master.encrypt(nonce, b"check", b"check")

    def matches(self, index_check: str, master_check: bytes) -> str | None:
        """None when these are the keys the store was created with, else what is wrong."""
        if not hmac.compare_digest(self._hmac("check"), index_check):
            return f"{INDEX} is not the index key this store was created with"
        if self._unwrap_with_any(master_check, b"check") is None:
            return f"{MASTER} is not the master key this store was created with"
        return None

    def key_for(self, subject: str, klass: str, period: str) -> tuple[bytes, bytes]:
        """The data key to encrypt with now. A new one is pending until `confirm`: it is
        stored by the transaction of the events that use it."""
        assert self._master is not None
        slot = (subject, klass, period)
        now = time.monotonic()
        with self._lock:
            current = self._current.get(slot)
            if current is not None and now - current.made < KEY_REUSE_S:
                self._current.move_to_end(slot)
                return current.key_id, current.key
            fresh = os.urandom(KEY_BYTES + KEY_ID_RANDOM)  # one system call
            key = fresh[:KEY_BYTES]
            # Time first: the key table's primary key grows at its end, as a log's does.
            stamp = int(time.time() * 1000).to_bytes(KEY_ID_BYTES - KEY_ID_RANDOM, "big")
            key_id = stamp + fresh[KEY_BYTES:]
            wrapped = self._master.encrypt(wrap_nonce(key_id), key, key_id)
            self._pending[key_id] = KeyRow(key_id, subject, klass, period, wrapped)
            self._current[slot] = _Current(key_id, key, now)
            if len(self._current) > self._cache_size:
                self._current.popitem(last=False)
            if len(self._pending) > self._cache_size:
                # A key never committed (its batches kept failing): no longer used either.
                self._drop(next(iter(self._pending)))
            self._remember(key_id, key)
            return key_id, key

    def _drop(self, key_id: bytes) -> None:
        """Stops using a key (lock held): a later event of its slot gets a new one."""
        row = self._pending.pop(key_id, None)
        if row is not None:
            slot = (row.subject, row.klass, row.period)
            current = self._current.get(slot)
            if current is not None and current.key_id == key_id:
                del self._current[slot]
        else:
            for slot in [s for s, c in self._current.items() if c.key_id == key_id]:
                del self._current[slot]

    def abandon(self, rows: Iterable[KeyRow]) -> None:
        """The transaction that was to store these new keys failed (or its answer was lost):
        never use them again (inserting one later could bring back a key erased meanwhile)."""
        with self._lock:
            for row in rows:
                self._drop(row.key_id)

    def destroyed(self, key_ids: Iterable[bytes]) -> None:
        """These keys in use here were found destroyed (an erasure elsewhere): stop using them."""
        with self._lock:
            for key_id in key_ids:
                self._drop(key_id)
                self._open.pop(key_id, None)
                self._ciphers.pop(key_id, None)

    def pending(self, key_ids: Iterable[bytes]) -> list[KeyRow]:
        """The rows of these keys that are not known to be stored yet."""
        with self._lock:
            return [self._pending[k] for k in dict.fromkeys(key_ids) if k in self._pending]

    def confirm(self, rows: Iterable[KeyRow]) -> None:
        """These keys were committed."""
        with self._lock:
            for row in rows:
                self._pending.pop(row.key_id, None)

    def forget(self, subjects: Iterable[str] = (), everything: bool = False) -> None:
        """Stop using this process's keys of these subjects (they were destroyed), or all."""
        wanted = set(subjects)
        with self._lock:
            for slot in [s for s in self._current if everything or s[0] in wanted]:
                del self._current[slot]
            self._open.clear()
            self._ciphers.clear()

    def _remember(self, key_id: bytes, key: bytes | None) -> None:
        self._open[key_id] = (key, time.monotonic())
        self._open.move_to_end(key_id)
        if len(self._open) > self._cache_size:
            self._open.popitem(last=False)

    def _trusted(self, key_id: bytes, now: float) -> bool:
        found = self._open.get(key_id)
        return found is not None and now - found[1] < KEY_TRUST_S

    def _unwrap_with_any(self, wrapped: bytes, aad: bytes) -> bytes | None:
        """`wrapped` with its nonce in front (the check value), or a data key's ciphertext
        alone, its nonce taken from its id (`aad`)."""
        assert self._master is not None
        if len(wrapped) == KEY_BYTES + TAG_BYTES:
            nonce, sealed = wrap_nonce(aad), wrapped
        else:
            nonce, sealed = wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:]
        for master in (self._master, *self._previous):
            try:
                return master.decrypt(nonce, sealed, aad)
            except InvalidTag:
                continue
        return None

    def prefetch(self, key_ids: Iterable[bytes]) -> None:
        """Loads these keys in one query (a page of events or rows at a time)."""
        now = time.monotonic()
        with self._lock:
            missing = [k for k in dict.fromkeys(key_ids) if not self._trusted(k, now)]
        if not missing or self.keys is None:
            return
        found = self.keys.load(missing)
        with self._lock:
            for key_id in missing:
                wrapped = found.get(key_id)
                if wrapped is None:
                    # Destroyed, or written by a transaction not committed yet (pending here).
                    if key_id not in self._pending:
                        self._remember(key_id, None)
                    continue
                key = self._unwrap_with_any(wrapped, key_id)
                if key is None:
                    raise SecretsError(f"data key {key_id.hex()} cannot be unwrapped by {MASTER}")
                self._remember(key_id, key)

    def aead(self, key_id: bytes) -> AESGCM | None:
        """The data key's cipher, or None when the key was destroyed."""
        key = self.data_key(key_id)
        return self._cipher(key_id, key) if key is not None else None

    def data_key(self, key_id: bytes) -> bytes | None:
        """A data key itself (an evidence bundle carries its events' keys), None once
        destroyed."""
        with self._lock:
            trusted = self._trusted(key_id, time.monotonic())
        if not trusted:
            self.prefetch([key_id])
        with self._lock:
            found = self._open.get(key_id)
        return found[0] if found else None

    def encrypt(self, key_id: bytes, key: bytes | AESGCM, plaintext: bytes) -> bytes:
        """key id, nonce, ciphertext (the key id is bound in as associated data)."""
        aead = key if isinstance(key, AESGCM) else self._cipher(key_id, key)
        nonce = self._nonce()
        return key_id + nonce + aead.encrypt(nonce, plaintext, key_id)

    def _nonce(self) -> bytes:
        """Unique per encryption: this process's random prefix and a counter, the prefix
        drawn again before the counter could repeat."""
        count = next(self._counter)
        if count >= NONCES_PER_PREFIX:
            with self._lock:
                if next(self._counter) >= NONCES_PER_PREFIX:
                    self._prefix = os.urandom(NONCE_BYTES - 4)
                    self._counter = itertools.count()
            return self._nonce()
        return self._prefix + count.to_bytes(4, "big")

    def _cipher(self, key_id: bytes, key: bytes) -> AESGCM:
        """A cipher object for this key, from a small cache (each holds kilobytes)."""
        aead = self._ciphers.get(key_id)
        if aead is None:
            aead = AESGCM(key)
            if len(self._ciphers) >= CIPHERS_KEPT:
                self._ciphers.pop(next(iter(self._ciphers)), None)
            self._ciphers[key_id] = aead
        return aead

    def decrypt(self, blob: bytes) -> bytes | None:
        """The plaintext, or None when its key was destroyed."""
        key_id = blob[:KEY_ID_BYTES]
        aead = self.aead(key_id)
        if aead is None:
            return None
        nonce = blob[KEY_ID_BYTES : KEY_ID_BYTES + NONCE_BYTES]
        return aead.decrypt(nonce, blob[KEY_ID_BYTES + NONCE_BYTES :], key_id)

    def seal_text(self, key: str | None, text: str | None) -> str | None:
        """A projection's copy of a personal value, under the data key of its event (`key`, a
        decoded state's `_key`); unchanged in a plaintext store, or without a key."""
        if text is None or key is None or not self.encrypted:
            return text
        key_id = bytes.fromhex(key)
        aead = self.aead(key_id)
        if aead is None:
            return None
        return TEXT_PREFIX + _b64(self.encrypt(key_id, aead, text.encode("utf-8", "surrogatepass")))

    def open_texts(self, values: Sequence[str | None]) -> list[str | Erased | None]:
        """References resolved and sealed values opened (one query each for their events and
        keys); ERASED where the key was destroyed; anything else as it is."""
        opened: list[str | Erased | None] = list(values)
        if not self.encrypted:
            return opened
        blobs = {
            i: _unb64(v[len(TEXT_PREFIX) :])
            for i, v in enumerate(values)
            if v is not None and v.startswith(TEXT_PREFIX)
        }
        self.prefetch(b[:KEY_ID_BYTES] for b in blobs.values())
        for i, blob in blobs.items():
            plain = self.decrypt(blob)
            opened[i] = ERASED if plain is None else plain.decode("utf-8", "surrogatepass")
        refs: dict[int, tuple[int, str]] = {}
        for i, value in enumerate(values):
            if value is not None and value.startswith(REF_PREFIX):
                number, _, field = value[len(REF_PREFIX) :].partition(".")
                refs[i] = (int(number), field)
        if refs:
            if self.sources is None:
                raise RuntimeError("a reference to an event, and no log to read it from")
            states = self.sources.states(self, sorted({n for n, _ in refs.values()}))
            for i, (event, referred) in refs.items():
                opened[i] = _referred(states.get(event), referred)
        return opened

    def open_text(self, value: str | None) -> str | Erased | None:
        return self.open_texts([value])[0]


def _referred(state: Mapping[str, object] | None, field: str) -> str | Erased:
    """A referenced value as shown: an identity normalised, a NUL as U+FFFD (as read tables
    show them); ERASED once its key is destroyed (or the event is gone)."""
    value = state.get(REFERRED.get(field, "")) if state is not None else None
    if not isinstance(value, str):
        return ERASED
    if field == IDENTITY:
        channel = state.get("channel") if state is not None else None
        value = normalise(channel if isinstance(channel, str) else None, value)
    return value.replace("\x00", "\ufffd")


class Erased:
    """What a destroyed value reads as (one instance: ERASED)."""

    def __repr__(self) -> str:
        return "ERASED"

    def __str__(self) -> str:
        return "[erased]"

    def __bool__(self) -> bool:
        return False


ERASED = Erased()


def plaintext() -> Vault:
    """The vault of a plaintext store."""
    return Vault(None, None)
