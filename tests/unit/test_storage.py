"""Event state is stored compressed (store.compression) and a new message's first
report is one event: every raw body comes back byte for byte, and a store written before both
(plain JSON, Registered then DeliveryReported) still reads, dedupes and replays."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import zstandard

from domain import ids
from domain.message import Message
from projections import rules
from store.compression import (
    CURRENT_VERSION,
    DICT_ID_BASE,
    MAGIC,
    StateCompressor,
    dictionary_path,
    inflate,
)


def test_state_compressor_round_trips_and_passes_plain_json_through() -> None:
    compressor = StateCompressor()
    for state in (b"{}", b'{"raw":"' + b"x" * 100_000 + b'"}', "é\u0000✓".encode()):
        packed = compressor.compress(state)
        assert packed.startswith(MAGIC)
        assert compressor.decompress(packed) == state == inflate(packed)
    assert compressor.decompress(b'{"plain":1}') == b'{"plain":1}'
    with pytest.raises(ValueError, match="unknown dictionary"):
        compressor.decompress(MAGIC + b"\x23\x01\x00\x00\x00\x00\x00\x00")


def test_state_written_with_every_earlier_dictionary_still_reads() -> None:
    """A new dictionary is added beside the old ones: events name theirs, and the current
    one writes."""
    compressor = StateCompressor()
    state = b'{"status":"DELIVERED","callback":{"raw":"{\\"message_id\\":\\"01H\\"}"}}'
    assert zstandard.get_frame_parameters(compressor.compress(state)).dict_id == (
        DICT_ID_BASE + CURRENT_VERSION
    )
    for version in range(1, CURRENT_VERSION + 1):
        dictionary = zstandard.ZstdCompressionDict(dictionary_path(version).read_bytes())
        assert dictionary.dict_id() == DICT_ID_BASE + version
        old = zstandard.ZstdCompressor(dict_data=dictionary).compress(state)
        assert compressor.decompress(old) == state == inflate(old)


def test_a_pair_is_one_frame_whose_first_piece_reads_alone_and_tells_nothing_of_the_second() -> (
    None
):
    """store.envelope's form: the public part, then the personal part continuing its frame."""
    compressor = StateCompressor()
    big = b'{"raw":"' + b"x" * 300_000 + b'"}'  # more than one zstd block
    for first, second in ((b"{}", b"{}"), (big, big), ("é\u0000✓".encode(), b"")):
        head, tail = compressor.compress_pair(first, second)
        assert compressor.decompress_pair(compressor.version, head) == (first, None)
        assert compressor.decompress_pair(compressor.version, head, tail) == (first, second)
        for other in (b"", b"{}", big):
            assert compressor.compress_pair(first, other)[0] == head
    # The second piece refers to the first: smaller than after a first piece it shares nothing
    # with (the same framing, so only the back-references differ).
    public = b'{"message_id":"01HXYZABCDEFGH","status":"DELIVERED","contact_id":"01HCONTACTID"}'
    private = (
        b'{"raw":"{\\"message_id\\":\\"01HXYZABCDEFGH\\",\\"contact_id\\":\\"01HCONTACTID\\"}"}'
    )
    tail = compressor.compress_pair(public, private)[1]
    assert len(tail) < len(compressor.compress_pair(b"{}", private)[1])
    # A cut-short frame is an error, not a shorter value.
    with pytest.raises(ValueError, match="incomplete"):
        compressor.decompress_pair(compressor.version, head, tail[:-3])
    with pytest.raises(ValueError, match="unknown dictionary"):
        compressor.decompress_pair(99, head)


def test_a_stored_timeline_leaves_out_what_its_row_says_and_reads_back_whole() -> None:
    stream = str(Message.create_id("P", "M"))
    common = {"app_id": "A", "conversation_id": "CONV", "contact_id": "C", "metadata": "order-1"}
    reason = {"reason_code": None, "reason_sub_code": None, "reason_description": None}
    reports = [
        {"status": "QUEUED_ON_CHANNEL", "channel": "WHATSAPP", "identity": "467", "at": "t1"},
        {"status": "FAILED", "channel": None, "identity": None, "at": "t2"},
        {"status": "DELIVERED", "channel": "SMS", "identity": "467", "at": "t3"},
        {"status": "READ", "channel": "SMS", "identity": "467", "at": "t4"},
        # Times no column of the row holds: a status's second report, a status without one.
        {"status": "DELIVERED", "channel": "WHATSAPP", "identity": "467", "at": "t5"},
        {"status": "SWITCHING_CHANNEL", "channel": "WHATSAPP", "identity": "467", "at": "t6"},
    ]
    facts = [{**r, **reason, **common} for r in reports]
    facts[0]["contact_id"] = None  # null where the row has a value: kept as null
    facts[1].update(reason_code="NO_CHANNELS_LEFT", metadata="other")
    for fact in facts:
        fact["source_ref"] = f"{stream}/{fact['channel'] or ''}|{fact['status']}"
    facts[2]["source_ref"] = "another-stream/SMS|DELIVERED"  # not derivable: kept
    row = {**rules.message_row("P", "M", facts), "identities_shown": '{"467": null}'}
    assert (row["contact_id"], row["channel"]) == ("C", "SMS")
    row["reports"] = rules.compact_reports(row, facts)
    assert rules.expanded_reports(row) == facts
    stored = orjson.loads(row["reports"])
    # A time its row's column for the status holds (queued_at, failed_at...) is left out, a
    # known status is one letter, and the first report leaves out the row's only identity.
    assert (row["queued_at"], row["failed_at"], row["delivered_at"]) == ("t1", "t2", "t3")
    assert stored[0] == {"s": "Q", "channel": "WHATSAPP", "contact_id": None}
    assert stored[1] == {
        "s": "F",
        "channel": None,
        "identity": None,
        "reason_code": "NO_CHANNELS_LEFT",
        "metadata": "other",
    }
    assert stored[2] == {
        "s": "D",
        "channel": "SMS",
        "identity": "467",
        "source_ref": "another-stream/SMS|DELIVERED",
    }
    assert stored[3] == {"s": "R"}  # channel and identity as the one before
    assert stored[4] == {"s": "D", "at": "t5", "channel": "WHATSAPP"}
    assert stored[5] == {"s": "W", "at": "t6"}
    assert len(row["reports"]) < len(orjson.dumps(facts)) / 3
    # A timeline stored whole, as earlier versions did, reads as it is.
    assert rules.expanded_reports({**row, "reports": orjson.dumps(facts).decode()}) == facts


def test_a_first_report_leaves_out_only_what_the_row_gives_back() -> None:
    stream = str(Message.create_id("P", "M"))
    base = {
        "reason_code": None,
        "reason_sub_code": None,
        "reason_description": None,
        "app_id": None,
        "conversation_id": None,
        "contact_id": "C",
        "metadata": None,
    }

    def fact(status: str, channel: str | None, identity: str | None, at: str) -> dict[str, Any]:
        ref = f"{stream}/{channel or ''}|{status}"
        return {
            **base,
            "status": status,
            "channel": channel,
            "identity": identity,
            "at": at,
            "source_ref": ref,
        }

    cases = [
        # Its channel the row's, its identity the row's only one: both left out.
        ([fact("DELIVERED", "SMS", "467", "t1")], '{"467": null}', {"s": "D"}),
        # Two identities: the first report's is kept.
        (
            [fact("QUEUED_ON_CHANNEL", "SMS", "467", "t1"), fact("READ", "SMS", "468", "t2")],
            '{"467": null, "468": null}',
            {"s": "Q", "identity": "467"},
        ),
        # No identity named: a null identity is the row's none.
        ([fact("DELIVERED", "SMS", None, "t1")], None, {"s": "D"}),
        # An identity the row does not name (a row written without names): kept.
        ([fact("DELIVERED", "SMS", "467", "t1")], None, {"s": "D", "identity": "467"}),
        # A status Sinch adds later: kept by name, with its time (no column holds it).
        (
            [fact("QUEUED_ON_CHANNEL", "SMS", "467", "t1"), fact("RECALLED", "SMS", "467", "t2")],
            '{"467": null}',
            {"s": "Q"},
        ),
    ]
    for facts, shown, first in cases:
        row = {**rules.message_row("P", "M", facts), "identities_shown": shown}
        row["reports"] = rules.compact_reports(row, facts)
        assert rules.stored_reports(row["reports"])[0] == first
        assert rules.expanded_reports(row) == facts
    assert orjson.loads(row["reports"])[1] == {"status": "RECALLED", "at": "t2"}


def test_a_timeline_names_no_reference_its_row_gives_and_reads_back_whole() -> None:
    ulid = "01J0DNDWBY98QZ7HJAYXTTH4MM"
    ordered = str(ids.message_id("P", ulid))
    facts = [
        {
            "status": status,
            "channel": "SMS",
            "identity": "467",
            "at": at,
            "reason_code": None,
            "reason_sub_code": None,
            "reason_description": None,
            "app_id": "A",
            "conversation_id": "CONV",
            "contact_id": "C",
            "metadata": "m",
            "source_ref": f"{ordered}/SMS|{status}",
        }
        for status, at in (("QUEUED_ON_CHANNEL", "t1"), ("DELIVERED", "t2"))
    ]
    row = {**rules.message_row("P", ulid, facts), "identities_shown": '{"467": null}'}
    row["reports"] = rules.compact_reports(row, facts, ordered)
    # Nothing but known statuses: their letters.
    assert orjson.loads(row["reports"]) == "QD"
    assert rules.stored_reports(row["reports"]) == [{"s": "Q"}, {"s": "D"}]
    assert rules.expanded_reports(row) == facts  # from the row alone
    # A stream the row's names do not give: every reference kept.
    for fact in facts:
        fact["source_ref"] = fact["source_ref"].replace(ordered, "elsewhere")
    row["reports"] = rules.compact_reports(row, facts, "elsewhere")
    assert all("source_ref" in r for r in orjson.loads(row["reports"]))
    assert rules.expanded_reports(row) == facts
