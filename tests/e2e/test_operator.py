"""The operator's loop: find a refused callback in the quarantine, fix it, feed it back with
`callback-ledger ingest`."""

from __future__ import annotations

import base64
from pathlib import Path

import orjson
from starlette.testclient import TestClient

from tests import payloads as p
from tests.conftest import SECRET
from tests.helpers import cli, names, stored_events


def test_fix_a_quarantined_callback_and_feed_it_back(
    client: TestClient, database_url: str, tmp_path: Path
) -> None:
    broken = p.delivery()
    del broken["message_delivery_report"]["message_id"]
    raw = p.encode(broken)
    assert (
        client.post(
            "/webhooks/sinch", content=raw, headers=p.signed_headers(raw, SECRET)
        ).status_code
        == 422
    )

    listed = cli(database_url, "quarantine")
    [entry] = [orjson.loads(line) for line in listed.stdout.splitlines()]
    assert entry["status_code"] == 422
    fixed = orjson.loads(base64.b64decode(entry["raw_base64"]))
    fixed["message_delivery_report"]["message_id"] = "MSG-FIXED"
    bodies = tmp_path / "fixed.jsonl"
    bodies.write_bytes(orjson.dumps(fixed) + b"\n\n" + orjson.dumps(p.inbound()) + b"\n")

    done = cli(database_url, "ingest", str(bodies))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"{bodies}:1: accepted MESSAGE_DELIVERY (1 events)",
        f"{bodies}:3: accepted MESSAGE_INBOUND (2 events)",
    ]
    event = next(e for e in stored_events(database_url) if names([e]) == ["Message.FirstReported"])
    assert event.message_id == "MSG-FIXED"
    assert event.callback["signature_verified"] is False
    assert event.callback["headers"] == {"x-ledger-source": "callback-ledger ingest"}
    again = cli(database_url, "ingest", str(bodies))
    assert "duplicate MESSAGE_DELIVERY" in again.stdout


def test_ingest_reports_refused_lines(database_url: str, tmp_path: Path) -> None:
    bodies = tmp_path / "mixed.jsonl"
    bodies.write_bytes(
        b"not json\n[1]\n"
        + orjson.dumps(p.delivery(status=5))
        + b"\n"
        + orjson.dumps(p.delivery())
        + b"\n"
    )
    done = cli(database_url, "ingest", str(bodies))
    assert done.returncode == 1
    assert f"{bodies}:1: refused" in done.stderr
    assert f"{bodies}:2: refused: not a JSON object" in done.stderr
    assert "message_delivery_report.status" in done.stderr
    assert done.stdout.strip() == f"{bodies}:4: accepted MESSAGE_DELIVERY (1 events)"


def test_ingest_names_a_missing_file_without_a_traceback(database_url: str, tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    good.write_bytes(orjson.dumps(p.delivery()) + b"\n")
    done = cli(database_url, "ingest", str(tmp_path / "missing.jsonl"), str(good))
    assert done.returncode == 1
    assert f"{tmp_path / 'missing.jsonl'}: no such file" in done.stderr
    assert "Traceback" not in done.stderr
    assert "accepted MESSAGE_DELIVERY" in done.stdout


def test_ingest_takes_a_pretty_printed_document_or_an_array(
    database_url: str, tmp_path: Path
) -> None:
    one = tmp_path / "one.json"
    one.write_bytes(orjson.dumps(p.delivery("M-PRETTY"), option=orjson.OPT_INDENT_2))
    many = tmp_path / "many.json"
    many.write_bytes(
        orjson.dumps([p.delivery("M-A"), p.delivery("M-B")], option=orjson.OPT_INDENT_2)
    )
    done = cli(database_url, "ingest", str(one), str(many))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"{one}: accepted MESSAGE_DELIVERY (1 events)",
        f"{many}[1]: accepted MESSAGE_DELIVERY (1 events)",
        f"{many}[2]: accepted MESSAGE_DELIVERY (1 events)",
    ]
