"""Evidence bundles (issue 17) on SQLite and PostgreSQL: `callback-ledger evidence` exports a
number's consent facts, messages, stored rows and seal chain segment; `evidence verify` and the
README's stand-alone script check it without the database and name a tampered byte, link or
event."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from tests import payloads as p
from tests.helpers import cli
from tests.integration.test_audit import ARRIVAL, NUMBER
from tests.integration.test_queries import feed

ROOT = Path(__file__).resolve().parents[2]


def readme_script(tmp_path: Path) -> Path:
    """The stand-alone check script, from the first document holding its marker: the docs
    (sorted), then the README."""
    for doc in [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]:
        text = doc.read_text(encoding="utf-8")
        found = re.search(r"<!-- evidence-check -->\n```python\n(.*?)```", text, re.S)
        if found is not None:
            script = tmp_path / "check_evidence.py"
            script.write_text(found.group(1), encoding="utf-8")
            return script
    raise AssertionError("the documented evidence check is gone")


def export(database_url: str, out: Path, *args: str) -> dict[str, Any]:
    done = cli(database_url, "evidence", *args, "--out", str(out))
    assert done.returncode == 0, done.stderr
    bundle: dict[str, Any] = orjson.loads(out.read_bytes())
    return bundle


def check(database_url: str, path: Path) -> subprocess.CompletedProcess[str]:
    # No database: a URL that cannot be opened shows `verify` does not touch it.
    return cli(database_url, "evidence", "verify", str(path))


def standalone(script: Path, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), str(path)], capture_output=True, text=True, timeout=60
    )


def tampered(tmp_path: Path, bundle: dict[str, Any], name: str) -> Path:
    path = tmp_path / f"{name}.json"
    path.write_bytes(orjson.dumps(bundle))
    return path


@pytest.fixture
def exported(client: TestClient, database_url: str, tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    feed(client, [*ARRIVAL, p.delivery("Z", "DELIVERED", "SMS", "+46799999999")])
    out = tmp_path / "evidence.json"
    return out, export(database_url, out, "--channel", "sms", "--identity", NUMBER)


def test_a_bundle_holds_the_numbers_facts_messages_and_seals(
    exported: tuple[Path, dict[str, Any]], database_url: str, tmp_path: Path
) -> None:
    path, bundle = exported
    assert bundle["format"] == "callback-ledger evidence" and bundle["version"] == 2
    assert bundle["subject"]["channel"] == "SMS"
    facts = {f["fact"] for f in bundle["consent_facts"]}
    assert {"KEYWORD_OPT_OUT", "OPT_IN_SUCCEEDED"} <= facts
    assert {m["message_id"] for m in bundle["messages"]} == {"A", "B", "D"}  # not C, not Z
    cited = {f["source_ref"] for f in bundle["consent_facts"]}
    cited |= {r["reference"] for m in bundle["messages"] for r in m["timeline"]}
    assert {e["reference"] for e in bundle["events"]} == cited
    assert all(e["callback"]["raw"] for e in bundle["events"])
    ids = [e["notification_id"] for e in bundle["events"]]
    assert ids == sorted(ids)
    assert bundle["seals"][-1]["seal"] == bundle["head"]["hash"]
    served = cli(database_url, "verify", "--format", "json")
    assert orjson.loads(served.stdout)["head"]["hash"] == bundle["head"]["hash"]

    done = check(database_url, path)
    assert done.returncode == 0, done.stderr
    assert bundle["head"]["hash"] in done.stdout
    assert f"{len(bundle['events'])} events" in done.stdout
    assert standalone(readme_script(tmp_path), path).returncode == 0

    access = cli(database_url, "audit", "access", "--format", "json")
    assert any(row["route"] == "evidence" for row in orjson.loads(access.stdout))


def test_tampering_is_named(exported: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    path, _ = exported
    script = readme_script(tmp_path)
    url = "sqlite:////nonexistent/dir/ledger.sqlite3"  # verify must not need it

    one_byte = orjson.loads(path.read_bytes())
    event = one_byte["events"][0]
    state = bytearray(base64.b64decode(event["state"]))
    state[len(state) // 2] ^= 1
    event["state"] = base64.b64encode(bytes(state)).decode()
    link = orjson.loads(path.read_bytes())
    assert len(link["seals"]) > 1
    link["seals"][1]["previous"] = "00" * 32
    dropped = orjson.loads(path.read_bytes())
    gone = dropped["events"].pop(1)
    digest = orjson.loads(path.read_bytes())
    covering = next(s for s in digest["seals"] if "digests" in s)
    covering["digests"].pop()

    cases = [
        (one_byte, f"event {event['notification_id']}"),
        (link, f"seal {link['seals'][1]['position']}"),
        (dropped, f"reference {gone['reference']}"),
        (digest, f"seal {covering['position']}"),
    ]
    for number, (changed, named) in enumerate(cases):
        bad = tampered(tmp_path, changed, f"bad{number}")
        done = check(url, bad)
        assert done.returncode == 1, (named, done.stdout)
        assert named in done.stderr, (named, done.stderr)
        assert standalone(script, bad).returncode != 0, named


def test_a_number_with_nothing_gives_an_empty_valid_bundle(
    client: TestClient, database_url: str, tmp_path: Path
) -> None:
    feed(client, ARRIVAL)
    out = tmp_path / "empty.json"
    bundle = export(database_url, out, "--channel", "SMS", "--identity", "+15550000000")
    assert (bundle["consent_facts"], bundle["messages"], bundle["events"]) == ([], [], [])
    assert bundle["seals"] == [] and bundle["head"] is not None
    assert check(database_url, out).returncode == 0
    assert standalone(readme_script(tmp_path), out).returncode == 0


def test_a_window_bounds_the_bundle(
    exported: tuple[Path, dict[str, Any]], database_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "window.json"
    bundle = export(
        database_url, out, "--channel", "SMS", "--identity", NUMBER,
        "--since", "2024-06-15T11:30:00Z", "--until", "2024-06-15T13:15:00Z",
    )  # fmt: skip
    assert [f["fact"] for f in bundle["consent_facts"]] == ["OPT_IN_SUCCEEDED"]
    assert {m["message_id"] for m in bundle["messages"]} == {"B"}
    assert check(database_url, out).returncode == 0
