"""The orjson fast path writes what the library's own mapper would: the same state after
decoding, for every event class it takes, and the library's bytes for anything else."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.domain import Aggregate, Snapshot
from eventsourcing.persistence import JSONTranscoder, Mapper, StoredEvent
from eventsourcing.utils import resolve_topic

from domain.callbacks import QuarantinedCallback, Receipt, UnrecognisedCallback, parse_callback
from domain.contact import Contact
from domain.message import Message
from store import envelope, spellings
from store.compression import state_compressor
from store.ledger import Ledger
from store.mapper import FAST_EVENTS, FastMapper
from store.vault import METADATA, Secrets, Vault
from tests import payloads as p


def receipt(body: dict[str, Any]) -> Receipt:
    return Receipt(json.dumps(body), datetime.now(UTC), True, {"x-sinch-nonce": "n"})


def events_of_every_kind() -> list[Any]:
    delivery = p.delivery(reason={"code": "RATE_LIMITED", "sub_code": "X", "extra": [1, 2.5]})
    message = Message(project_id="P", message_id="M1")
    message.record_report(parse_callback("MESSAGE_DELIVERY", delivery), receipt(delivery))
    read = p.delivery(status="READ")
    message.record_report(parse_callback("MESSAGE_DELIVERY", read), receipt(read))
    submit = p.submit("M1")
    message.record_submission(parse_callback("MESSAGE_SUBMIT", submit), receipt(submit))
    # Streams written before FirstReported start with Registered.
    registered_only = Message(project_id="P", message_id="M2")
    contact = Contact(project_id="P", contact_key="CONTACT1")
    opt_out, stop = p.opt("OPT_OUT"), p.inbound("IN1", text="STOP ünïcode ✓")
    contact.record_consent(parse_callback("OPT_OUT", opt_out), receipt(opt_out))
    contact.record_inbound(parse_callback("MESSAGE_INBOUND", stop), receipt(stop))
    merge = p.envelope(
        contact_merge_notification={
            "preserved_contact": {"id": "CONTACT1", "channel_identities": []},
            "deleted_contact": {
                "id": "CONTACT2",
                "channel_identities": [{"channel": "SMS", "identity": "+46732001122"}],
            },
        }
    )
    contact.record_merge(parse_callback("CONTACT_MERGE", merge), receipt(merge))  # type: ignore[arg-type]
    gone = p.envelope(contact_delete_notification={"contact": {"id": "CONTACT1"}})
    contact.record_delete(parse_callback("CONTACT_DELETE", gone), receipt(gone))  # type: ignore[arg-type]
    unknown = UnrecognisedCallback(
        body_hash="h1",
        trigger="EVENT_INBOUND",
        project_id="P",
        callback=receipt(stop).as_event_data(),
    )
    refused = QuarantinedCallback(
        body_hash="h2",
        trigger="UNKNOWN",
        status_code=400,
        problems=["the body is not JSON"],
        raw_base64="/w==",
        callback={**receipt(stop).as_event_data(), "raw": None},
    )
    return [
        *message.collect_events(),
        *registered_only.collect_events(),
        *contact.collect_events(),
        *unknown.collect_events(),
        *refused.collect_events(),
        *resolved(),
    ]


def resolved() -> list[Any]:
    refused = QuarantinedCallback(
        body_hash="h3",
        trigger="UNKNOWN",
        status_code=400,
        problems=["x"],
        raw_base64=None,
        callback={"raw": "x", "received_at": "2024-06-15T15:00:00+00:00"},
    )
    refused.collect_events()
    refused.resolve("reviewed", "ops", "2024-06-15T16:00:00+00:00", "checked by hand", None)
    return list(refused.collect_events())


@pytest.fixture
def mappers() -> tuple[Mapper[UUID], FastMapper]:
    transcoder = Ledger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}).mapper.transcoder
    assert isinstance(transcoder, JSONTranscoder)
    library = Mapper[UUID](transcoder=transcoder)
    return library, FastMapper(library)


def decoded(mapper: Mapper[UUID], stored: StoredEvent) -> dict[str, Any]:
    return dict(vars(mapper.to_domain_event(stored)))


def test_every_fast_event_decodes_as_the_library_wrote_it(
    mappers: tuple[Mapper[UUID], FastMapper],
) -> None:
    library, fast = mappers
    events = events_of_every_kind()
    assert {type(e) for e in events} == FAST_EVENTS
    for event in events:
        ours, theirs = fast.to_stored_event(event), library.to_stored_event(event)
        # The topic stored in its shorter spelling where it has one (store.spellings), which
        # the library resolves to the same class.
        assert (ours.originator_id, ours.originator_version, ours.topic) == (
            theirs.originator_id,
            theirs.originator_version,
            spellings.written(theirs.topic),
        )
        assert resolve_topic(ours.topic) is resolve_topic(theirs.topic) is type(event)
        assert spellings.read(ours.topic) == theirs.topic
        assert decoded(library, ours) == decoded(library, theirs) == dict(vars(event))
        assert isinstance(decoded(library, ours)["timestamp"], datetime)


def test_other_events_and_unencodable_values_take_the_library_path(
    mappers: tuple[Mapper[UUID], FastMapper],
) -> None:
    library, fast = mappers
    contact = Contact(project_id="P", contact_key="C")
    snapshot = Snapshot.take(contact)
    assert fast.to_stored_event(snapshot) == library.to_stored_event(snapshot)
    assert isinstance(
        decoded(library, fast.to_stored_event(snapshot))["state"]["_created_on"], datetime
    )

    class Odd(Aggregate):
        class Happened(Aggregate.Event):
            n: int

    odd = Odd()
    odd.trigger_event(Odd.Happened, n=2**70)
    happened = odd.collect_events()[-1]
    assert fast.to_stored_event(happened) == library.to_stored_event(happened)

    message = Message(project_id="P", message_id="M")
    big = p.delivery(reason={"code": "X", "n": 2**70})  # orjson cannot write this integer
    message.record_report(parse_callback("MESSAGE_DELIVERY", big), receipt(big))
    reported = message.collect_events()[-1]
    assert decoded(library, fast.to_stored_event(reported))["reason"]["n"] == 2**70


def test_encrypted_events_decode_to_the_same_fields(
    mappers: tuple[Mapper[UUID], FastMapper],
) -> None:
    """In an encrypted store every fast event's personal fields are sealed (none of them in the
    stored bytes) and the library's mapper, through our compressor, reads back the same event;
    with the keys destroyed it reads the public fields and None for the personal ones."""
    library, _ = mappers
    fast = FastMapper(Mapper(library.transcoder, state_compressor()))
    keys = MemoryKeys()
    vault = Vault(Secrets(os.urandom(32), os.urandom(32)), keys)
    fast.vault = vault
    for event in events_of_every_kind():
        stored = fast.to_stored_event(event)
        kind = envelope.PRIVATE.get(stored.topic)
        if kind is None:  # Registered events hold no personal data
            assert not envelope.is_sealed(stored.state)
            continue
        assert envelope.is_sealed(stored.state)
        for row in vault.pending(envelope.key_ids([stored.state])):
            keys.wrapped[row.key_id] = row.wrapped
        for secret in (b"46732001122", "ünïcode".encode(), b"order-123", b"checked by hand"):
            assert secret not in stored.state
        back = dict(vars(fast.to_domain_event(stored)))
        assert back.pop("subject") and back.pop("_key")
        if kind.metadata:  # the metadata's keyed name, public (None: it has none)
            name = back.pop(envelope.METADATA_INDEX)
            metadata = vars(event).get("metadata")
            assert name == (vault.index(METADATA, metadata) if metadata is not None else None)
        assert back == dict(vars(event))
    keys.wrapped.clear()
    fast.vault = Vault(vault.secrets, keys)  # a process that never saw the keys
    for event in events_of_every_kind():
        stored = fast.to_stored_event(event)
        keys.wrapped.clear()
        fast.vault.forget(everything=True)
        if not envelope.is_sealed(stored.state):
            continue
        back = dict(vars(fast.to_domain_event(stored)))
        assert back["erased"] is True
        for name in envelope.PRIVATE[stored.topic].fields:
            assert back[name] is None
        assert "callback" not in back or back["callback"].get("raw") is None
        assert back["originator_version"] == event.originator_version


class MemoryKeys:
    def __init__(self) -> None:
        self.wrapped: dict[bytes, bytes] = {}

    def load(self, key_ids: Sequence[bytes]) -> dict[bytes, bytes]:
        return {k: self.wrapped[k] for k in key_ids if k in self.wrapped}


def test_an_integer_beyond_64_bits_comes_back_exact_when_encrypted() -> None:
    transcoder = Ledger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}).mapper.transcoder
    fast = FastMapper(Mapper(transcoder, state_compressor()))
    keys = MemoryKeys()
    fast.vault = Vault(Secrets(os.urandom(32), os.urandom(32)), keys)
    big = 2**70 + 1
    body = p.delivery(reason={"code": "X", "n": big})
    message = Message(project_id="P", message_id="M1")
    message.record_report(parse_callback("MESSAGE_DELIVERY", body), receipt(body))
    (event,) = message.collect_events()
    stored = fast.to_stored_event(event)
    for row in fast.vault.pending(envelope.key_ids([stored.state])):
        keys.wrapped[row.key_id] = row.wrapped
    back = fast.to_domain_event(stored)
    assert back.reason["n"] == big  # type: ignore[attr-defined]
