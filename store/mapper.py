"""Encoding our own events with orjson.

The library's JSON transcoder (the standard `json` module with a hook per datetime) was the
largest single cost of a save. The bytes written here are plain JSON in the library's own
format (datetimes as {"_type_": "datetime_iso", "_data_": ...}), so the library's transcoder,
the projector and any other reader decode them exactly as before. Only event classes whose
fields we know (text, numbers, datetimes, JSON objects) take this path: orjson would write a
UUID as a bare string, which the library would then read back as text. Everything else
(snapshots, foreign events) is encoded by the library as usual.

With a compressor (store.compression) the JSON is compressed here, as the library would
do it: the same bytes, without the library's slower encoding. With a cipher everything goes
through the library, which compresses before it encrypts."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Mapper, StoredEvent
from eventsourcing.utils import get_topic

from domain.contact import Contact
from domain.message import Message
from domain.unrecognised import QuarantinedCallback, UnrecognisedCallback

FAST_EVENTS: frozenset[type] = frozenset(
    {
        Message.Registered,  # type: ignore[attr-defined]
        Message.DeliveryReported,
        Message.FirstReported,
        Message.Submitted,
        Contact.Registered,  # type: ignore[attr-defined]
        Contact.ConsentReported,
        Contact.InboundMessageReceived,
        # Their bodies are text as stored: orjson writes it as UTF-8 where the library's
        # encoder takes longer.
        UnrecognisedCallback.Received,  # type: ignore[attr-defined]
        QuarantinedCallback.Quarantined,  # type: ignore[attr-defined]
    }
)


def _tagged(value: Any) -> dict[str, str]:
    if isinstance(value, datetime):
        return {"_type_": "datetime_iso", "_data_": value.isoformat()}
    raise TypeError(f"{type(value).__name__} is not one of the fast path's types")


class FastMapper(Mapper[UUID]):
    def __init__(self, mapper: Mapper[UUID]) -> None:
        super().__init__(mapper.transcoder, mapper.compressor, mapper.cipher)
        self._topics: dict[type, str] = {cls: get_topic(cls) for cls in FAST_EVENTS}

    def to_stored_event(self, domain_event: DomainEventProtocol[UUID]) -> StoredEvent:
        topic = self._topics.get(type(domain_event))
        if topic is None or self.cipher:
            return super().to_stored_event(domain_event)
        state = dict(vars(domain_event))
        originator_id = state.pop("originator_id")
        originator_version = state.pop("originator_version")
        try:
            data = orjson.dumps(state, default=_tagged, option=orjson.OPT_PASSTHROUGH_DATETIME)
        except TypeError:  # e.g. an integer beyond 64 bits inside a callback's JSON
            return super().to_stored_event(domain_event)
        if self.compressor:
            data = self.compressor.compress(data)
        return StoredEvent(originator_id, originator_version, topic, data)
