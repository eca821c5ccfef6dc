"""Encoding our own events with orjson, faster than the library's transcoder, into the same
JSON (datetimes tagged as the library tags them), so any reader decodes them as before. Only
event classes whose fields we know take this path (orjson would write a UUID as a bare string);
snapshots and the rest are the library's. Compressed as the library would (store.compression);
in an encrypted store the personal fields are split off and encrypted (store.envelope)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any
from uuid import UUID

from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Compressor, Mapper, StoredEvent
from eventsourcing.utils import get_topic

from domain.callbacks import QuarantinedCallback, UnrecognisedCallback
from domain.contact import Contact
from domain.keywords import NOTHING, Reading
from domain.message import Message
from store import envelope, spellings
from store.compression import StateCompressor
from store.vault import Vault, plaintext

FAST_EVENTS: frozenset[type] = frozenset(
    {
        Message.Registered,  # type: ignore[attr-defined]
        Message.DeliveryReported,
        Message.FirstReported,
        Message.Submitted,
        Contact.Registered,  # type: ignore[attr-defined]
        Contact.ConsentReported,
        Contact.InboundMessageReceived,
        Contact.Merged,
        Contact.Deleted,
        # Their bodies are text as stored: orjson writes it faster.
        UnrecognisedCallback.Received,  # type: ignore[attr-defined]
        QuarantinedCallback.Quarantined,  # type: ignore[attr-defined]
        QuarantinedCallback.Resolved,  # type: ignore[attr-defined]
    }
)


class EnvelopeCompressor(Compressor):
    """The library's compressor hook, reading encrypted events too (as one JSON object)."""

    def __init__(self, zstd: StateCompressor, mapper: FastMapper) -> None:
        self.zstd = zstd
        self.mapper = mapper

    def compress(self, data: bytes) -> bytes:
        return self.zstd.compress(data)

    def decompress(self, data: bytes) -> bytes:
        if envelope.is_sealed(data):
            state = envelope.open_state(data, self.mapper.vault, self.zstd)
            try:
                return envelope.dumps(state)
            except TypeError:  # an integer beyond 64 bits: the standard encoder takes it
                return json.dumps(state).encode()
        return self.zstd.decompress(data)


def _never(text: str | None) -> Reading:
    return NOTHING


class FastMapper(Mapper[UUID]):
    """`vault` and `classify` are set by the Ledger once it knows the store's mode."""

    def __init__(self, mapper: Mapper[UUID]) -> None:
        zstd = mapper.compressor
        compressor = EnvelopeCompressor(zstd, self) if isinstance(zstd, StateCompressor) else zstd
        super().__init__(mapper.transcoder, compressor, mapper.cipher)
        self.zstd = zstd if isinstance(zstd, StateCompressor) else None
        self._topics: dict[type, str] = {cls: get_topic(cls) for cls in FAST_EVENTS}
        self.vault: Vault = plaintext()
        self.classify: Callable[[str | None], Reading] = _never

    def without_personal_fields(self) -> FastMapper:
        """A mapper reading encrypted events' public fields only: enough to decide on, without
        loading any data key."""
        zstd = self.zstd if self.zstd is not None else self.compressor
        return FastMapper(Mapper(self.transcoder, zstd, self.cipher))

    def to_stored_event(self, domain_event: DomainEventProtocol[UUID]) -> StoredEvent:
        topic = self._topics.get(type(domain_event))
        if topic is None or self.cipher:
            return self._library_stored(domain_event)
        state = dict(vars(domain_event))
        originator_id = state.pop("originator_id")
        originator_version = state.pop("originator_version")
        kind = envelope.PRIVATE.get(topic)
        if kind is not None and self.vault.encrypted:
            if self.zstd is None:  # never personal data in plaintext in an encrypted store
                raise RuntimeError("an encrypted store's events are written compressed")
            data = self._sealed(kind, state)
            return StoredEvent(originator_id, originator_version, spellings.written(topic), data)
        try:
            data = envelope.dumps(state)
        except TypeError:  # e.g. an integer beyond 64 bits inside a callback's JSON
            return self._library_stored(domain_event)
        if self.compressor:
            data = self.compressor.compress(data)
        return StoredEvent(originator_id, originator_version, spellings.written(topic), data)

    def _library_stored(self, domain_event: DomainEventProtocol[UUID]) -> StoredEvent:
        stored = super().to_stored_event(domain_event)
        return dataclasses.replace(stored, topic=spellings.written(stored.topic))

    def _sealed(self, kind: envelope.Kind, state: dict[str, Any]) -> bytes:
        assert self.zstd is not None
        public, private, slot = envelope.split(kind, state, self.vault, self.classify)
        key_id, key = self.vault.key_for(*slot)
        try:
            encoded = envelope.dumps(public), envelope.dumps(private)
            library = False
        except TypeError:  # the library's encoder takes what orjson does not
            encoded = self.transcoder.encode(public), self.transcoder.encode(private)
            library = True
        return envelope.seal(*encoded, key_id, key, self.vault, self.zstd, library)
