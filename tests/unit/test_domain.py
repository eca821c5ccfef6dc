"""The pure domain: callback parsing and the aggregates' decisions. No I/O."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain import ids
from domain.callbacks import (
    InboundCallback,
    InvalidCallback,
    Receipt,
    detect_trigger,
    parse_callback,
)
from domain.contact import Contact, contact_key
from domain.message import Message
from tests import payloads as p

RECEIPT = Receipt("{}", datetime(2024, 6, 15, tzinfo=UTC), True, {})
STATUSES = ["QUEUED_ON_CHANNEL", "SWITCHING_CHANNEL", "FAILED", "DELIVERED", "READ", "NEW_STATUS"]
CHANNELS = ["WHATSAPP", "SMS", "RCS", None]


def test_detect_trigger() -> None:
    assert detect_trigger(p.delivery()) == "MESSAGE_DELIVERY"
    assert detect_trigger(p.inbound()) == "MESSAGE_INBOUND"
    assert detect_trigger(p.opt("OPT_IN")) == "OPT_IN"
    assert detect_trigger(p.envelope(event_delivery_report={})) == "EVENT_DELIVERY"
    assert detect_trigger({"project_id": "x"}) == "UNKNOWN"
    with pytest.raises(InvalidCallback, match="more than one trigger"):
        detect_trigger({**p.delivery(), "message": {}})


def test_times_are_utc_and_naive_times_read_as_utc() -> None:
    callback = parse_callback(
        "MESSAGE_DELIVERY", p.delivery(event_time="2024-06-15T16:00:00+02:00")
    )
    assert callback.event_time == datetime(2024, 6, 15, 14, tzinfo=UTC)
    callback = parse_callback("MESSAGE_DELIVERY", p.delivery(event_time="2024-06-15T16:00:00"))
    assert callback.event_time == datetime(2024, 6, 15, 16, tzinfo=UTC)


def test_unknown_statuses_and_reason_codes_are_data() -> None:
    body = p.delivery(status="SOMETHING_NEW", reason={"code": "NEW_CODE", "extra": 1})
    callback = parse_callback("MESSAGE_DELIVERY", body)
    assert callback.message_delivery_report.status == "SOMETHING_NEW"


def test_invalid_fields_are_named() -> None:
    with pytest.raises(InvalidCallback) as info:
        parse_callback("MESSAGE_INBOUND", p.envelope(message={"id": 5}))
    assert "message.id: Input should be a valid string" in info.value.problems
    assert any(problem.startswith("message.channel_identity") for problem in info.value.problems)


def test_inbound_text_and_kind() -> None:
    callback = parse_callback("MESSAGE_INBOUND", p.inbound(text="STOP"))
    assert isinstance(callback, InboundCallback)
    assert (callback.message.text, callback.message.kind) == ("STOP", "text_message")
    media = parse_callback("MESSAGE_INBOUND", p.inbound(text=None))
    assert isinstance(media, InboundCallback)
    assert (media.message.text, media.message.kind) == (None, "media_message")


def test_contact_key_falls_back_to_channel_identity() -> None:
    assert contact_key("C1", "SMS", "+4673") == "C1"
    assert contact_key(None, "SMS", "+4673") == contact_key("", "SMS", "4673") == "~SMS:4673"


def test_ids_are_deterministic() -> None:
    assert Message.create_id("P", "M") == Message.create_id("P", "M")
    assert Message.create_id("P", "M") != Message.create_id("P2", "M")
    assert Message.create_id("P", "M") != Contact.create_id("P", "M")


report = st.tuples(st.sampled_from(STATUSES), st.sampled_from(CHANNELS))


@given(st.lists(report, max_size=30))
def test_message_keeps_each_distinct_report_once_in_any_order(reports: list) -> None:
    message = Message(project_id="P", message_id="M")
    accepted = [
        message.record_report(
            parse_callback("MESSAGE_DELIVERY", p.delivery(status=s, channel=c)), RECEIPT
        )
        for s, c in reports
    ]
    assert sum(accepted) == len(set(reports))
    events = message.collect_events()
    # The first report is the stream's first event (FirstReported); no report: Registered.
    assert len(events) == max(1, len(set(reports)))
    assert [(e.status, e.channel) for e in events if hasattr(e, "status")] == list(
        dict.fromkeys(reports)
    )
    kinds = ["FirstReported"] + ["DeliveryReported"] * (len(events) - 1) if reports else []
    assert [type(e).__name__ for e in events] == (kinds or ["Registered"])
    # And they load back into the same state.
    loaded = None
    for e in events:
        loaded = e.mutate(loaded)
    assert loaded is not None and loaded.report_keys.keys() == message.report_keys.keys()


def test_contact_dedupes_consent_by_request_id_else_natural_key() -> None:
    contact = Contact(project_id="P", contact_key="C1")

    def record(body: dict) -> bool:
        callback = parse_callback("OPT_OUT" if "opt_out_notification" in body else "OPT_IN", body)
        return contact.record_consent(callback, RECEIPT)  # type: ignore[arg-type]

    assert record(p.opt(request_id="R1"))
    assert not record(p.opt(request_id="R1", event_time="2024-07-01T00:00:00Z"))
    assert record(p.opt("OPT_IN", request_id="R1"))  # same id, other kind: another request
    assert record(p.opt(request_id=None))
    assert not record(p.opt(request_id=None, identity="46732001122"))
    assert not record(p.opt(request_id=None, identity="+46732001122"))
    assert record(p.opt(request_id=None, event_time="2024-06-15T15:00:01Z"))
    assert record(p.opt(request_id=None, status="OPT_OUT_FAILED"))


def test_contact_dedupes_inbound_by_message_id() -> None:
    contact = Contact(project_id="P", contact_key="C1")
    first = parse_callback("MESSAGE_INBOUND", p.inbound(message_id="I1"))
    assert contact.record_inbound(first, RECEIPT)  # type: ignore[arg-type]
    assert not contact.record_inbound(first, RECEIPT)  # type: ignore[arg-type]
    other = parse_callback("MESSAGE_INBOUND", p.inbound(message_id="I2"))
    assert contact.record_inbound(other, RECEIPT)  # type: ignore[arg-type]


def test_a_ulid_message_id_gives_a_time_ordered_stream() -> None:
    early, late = "01J0DNDW10NYYP35MSSZGSH2PS", "01J0DNDWBY98QZ7HJAYXTTH4MM"
    assert ids.ulid_millis(early) == 0x01901B56F020
    assert ids.ulid_millis(late.lower()) == ids.ulid_millis(late) == 0x01901B56F17E
    odd = ("7\u00df" + "Z" * 24, "7\u017f" + "Z" * 24)  # upper(): "SS" and "S", not ULIDs
    for other in ("M1", late[:-1], "8" + late[1:], late[:-1] + "U", "x" * 26, *odd):
        assert ids.ulid_millis(other) is None
        assert ids.message_id("P", other).version == 5  # hashed whole
    first, second = (ids.message_id("P", m) for m in (early, late))
    assert first < second
    assert first.bytes[:10] == ids.TAIL_PREFIX + (0x01901B56F020).to_bytes(6, "big")
    # Its own name still decides the rest: another project, another stream.
    assert ids.message_id("P2", early) != first
    assert ids.message_id("P", early) == first


def test_a_tail_stream_sorts_after_every_contact_and_hashed_message() -> None:
    """So a new message's stream goes in at the end of the log's key (domain.ids)."""
    earliest = ids.message_id("P", "0" * 26)  # made at the epoch
    others = [ids.contact_id("P", f"C{n}") for n in range(20_000)]
    others += [ids.message_id("P", f"M{n}") for n in range(20_000)]  # not ULIDs
    assert max(others) < earliest
    # PostgreSQL orders uuid as bytes, as Python's UUID does.
    assert max(o.bytes for o in others) < earliest.bytes
