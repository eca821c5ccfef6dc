"""Evidence bundles on SQLite and PostgreSQL: `callback-ledger evidence` exports a number's
consent facts, messages, stored rows and seal chain segment; `evidence verify` checks it without
the database and names a tampered byte, link or event, and every shown claim its sealed events
do not give; the documented stand-alone script checks what the standard library can."""

from __future__ import annotations

import argparse
import base64
import re
import subprocess
import sys
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

import orjson
import pytest
from starlette.testclient import TestClient

from api.app import create_app
from callback_ledger.evidence_cli import run_check
from evidence import claims as bundles
from service.runtime import Runtime
from service.settings import Settings
from tests import payloads as p
from tests.conftest import SECRET, fresh_database
from tests.helpers import KEYS, cli, make_key
from tests.integration.test_audit import ARRIVAL, NUMBER
from tests.integration.test_erasure_read import erase
from tests.integration.test_queries import feed, wait_for_projections

# One worker records the stories the module's tests share (`stories`).
pytestmark = pytest.mark.xdist_group("evidence")

ROOT = Path(__file__).resolve().parents[2]


def readme_script(tmp_path: Path) -> Path:
    """The stand-alone check script, as the evidence guide prints it."""
    text = (ROOT / "docs" / "personal-data-and-evidence.md").read_text(encoding="utf-8")
    found = re.search(r"<!-- evidence-check -->\n```python\n(.*?)```", text, re.S)
    assert found is not None, "the documented evidence check is gone"
    script = tmp_path / "check_evidence.py"
    script.write_text(found.group(1), encoding="utf-8")
    return script


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


# ---- every claim a bundle shows is bound to its sealed events -------------------------------

DAY = "2024-06-15T"
OPT_OUT = p.opt("OPT_OUT", request_id="R-OUT", identity=NUMBER, event_time=f"{DAY}15:00:00Z")


def whole_channel_opt_out() -> dict[str, Any]:
    """An opt-out naming only the contact: consent for its whole SMS channel."""
    body = p.opt("OPT_OUT", request_id="R-ALL", event_time=f"{DAY}16:00:00Z")
    del body["opt_out_notification"]["identity"]
    return body


STORY = [*ARRIVAL, OPT_OUT, whole_channel_opt_out()]


def recorded(
    settings: Settings, tmp_path: Path, bodies: list[dict[str, Any]], since: str | None = None
) -> Path:
    """A bundle for NUMBER (from `since`) made from a store `settings` names, after posting
    `bodies`."""
    runtime = Runtime(settings)
    try:
        ledger = runtime.ledger()
        key = make_key(settings.database_url, "evidence-admin")
        with TestClient(
            create_app(settings, ledger), headers={"Authorization": f"Bearer {key}"}
        ) as client:
            feed(client, bodies)
            found = bundles.bundle(
                ledger, runtime.store_database(), runtime.database(), "SMS", NUMBER, since
            )
    finally:
        runtime.close()
    out = tmp_path / "bundle.json"
    out.write_bytes(orjson.dumps(found))
    return out


@pytest.fixture(params=["encrypted", "plaintext"])
def story_settings(request: pytest.FixtureRequest, database_url: str) -> Settings:
    """A store with keys (personal fields encrypted), and one without."""
    keys = KEYS if request.param == "encrypted" else None
    return Settings(keys=keys, database_url=database_url, webhook_secrets=(SECRET,), db_timeout_s=3)


@pytest.fixture(scope="module")
def stories(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str, str], Path]:
    """`stories(backend, keys)`: STORY's bundle for NUMBER from a store on `backend`,
    "encrypted" or "plaintext", recorded once for this module. Tests read it, or edit copies."""
    found: dict[tuple[str, str], Path] = {}

    def story(backend: str, keys: str) -> Path:
        if (backend, keys) not in found:
            made = contextmanager(fresh_database)(backend, tmp_path_factory, request)
            with made as url:
                settings = Settings(
                    keys=KEYS if keys == "encrypted" else None,
                    database_url=url,
                    webhook_secrets=(SECRET,),
                    db_timeout_s=3,
                )
                found[backend, keys] = recorded(settings, tmp_path_factory.mktemp("story"), STORY)
        return found[backend, keys]

    return story


@pytest.fixture(params=["encrypted", "plaintext"])
def story(
    request: pytest.FixtureRequest, backend: str, stories: Callable[[str, str], Path]
) -> Path:
    return stories(backend, request.param)


def verified(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """`evidence verify` in this process (the command's own function), and what it wrote."""
    code = run_check(Settings(), argparse.Namespace(file=str(path)))
    out = capsys.readouterr()
    return code, out.out + out.err


def index_of(items: list[dict[str, Any]], **wanted: Any) -> int:
    return next(i for i, item in enumerate(items) if wanted.items() <= item.items())


Edit = Callable[[dict[str, Any]], str]


def set_field(where: Callable[[dict[str, Any]], tuple[dict[str, Any], str]], key: str,
              value: Any) -> Edit:  # fmt: skip
    def edit(bundle: dict[str, Any]) -> str:
        part, path = where(bundle)
        assert key in part or value is not None, path
        part[key] = value
        return f"{path}.{key}"

    return edit


def fact(**wanted: Any) -> Callable[[dict[str, Any]], tuple[dict[str, Any], str]]:
    def where(bundle: dict[str, Any]) -> tuple[dict[str, Any], str]:
        i = index_of(bundle["consent_facts"], **wanted)
        return bundle["consent_facts"][i], f"consent_facts[{i}]"

    return where


def report(message_id: str, status: str) -> Callable[[dict[str, Any]], tuple[dict[str, Any], str]]:
    def where(bundle: dict[str, Any]) -> tuple[dict[str, Any], str]:
        m = index_of(bundle["messages"], message_id=message_id)
        r = index_of(bundle["messages"][m]["timeline"], status=status)
        return bundle["messages"][m]["timeline"][r], f"messages[{m}].timeline[{r}]"

    return where


def callback_of(trigger_text: str) -> Callable[[dict[str, Any]], tuple[dict[str, Any], str]]:
    """The callback of the event whose raw body holds `trigger_text`."""

    def where(bundle: dict[str, Any]) -> tuple[dict[str, Any], str]:
        i = next(
            i for i, e in enumerate(bundle["events"])
            if e["callback"] and trigger_text in (e["callback"]["raw"] or "")
        )  # fmt: skip
        return bundle["events"][i]["callback"], f"events[{i}].callback"

    return where


def whole(name: str) -> Callable[[dict[str, Any]], tuple[dict[str, Any], str]]:
    def where(bundle: dict[str, Any]) -> tuple[dict[str, Any], str]:
        return bundle[name], name

    return where


def emptied(name: str) -> Edit:
    def edit(bundle: dict[str, Any]) -> str:
        assert bundle[name]
        bundle[name] = []
        return f"{name}: the bundle shows 0 entries"

    return edit


def dropped_claim(bundle: dict[str, Any]) -> str:
    """A fact left out of the claims while its event stays: recomputed back."""
    i = index_of(bundle["consent_facts"], fact="OPT_OUT_SUCCEEDED", identity="")
    del bundle["consent_facts"][i]
    return "consent_facts"


def emptied_timeline(bundle: dict[str, Any]) -> str:
    m = index_of(bundle["messages"], message_id="A")
    bundle["messages"][m]["timeline"] = []
    return f"messages[{m}].timeline"


def edited_raw(bundle: dict[str, Any]) -> str:
    """The text of the STOP the keyword fact rests on."""
    part, path = callback_of(" Stop ")(bundle)
    part["raw"] = part["raw"].replace(" Stop ", "Hello")
    return f"{path}.raw"


def unread_keyword(bundle: dict[str, Any]) -> str:
    """Another keyword configuration: STOP read as no keyword no longer matches its fact."""
    bundle["keywords"]["languages"] = ["es"]
    return "consent_facts"


EDITS: list[tuple[str, Edit]] = [
    (
        "fact",
        set_field(fact(fact="OPT_OUT_SUCCEEDED", request_id="R-OUT"), "fact", "OPT_IN_SUCCEEDED"),
    ),
    ("effect", set_field(fact(fact="OPT_OUT_SUCCEEDED", identity=""), "effect", "OPTED_IN")),
    (
        "event_time",
        set_field(fact(fact="KEYWORD_OPT_OUT"), "event_time", f"{DAY}09:00:00.000000Z"),
    ),
    ("accepted_time", set_field(fact(fact="OPT_IN_SUCCEEDED"), "accepted_time", None)),
    ("fact identity", set_field(fact(fact="OPT_IN_SUCCEEDED"), "identity", "46700000002")),
    ("keyword", set_field(fact(fact="KEYWORD_OPT_OUT"), "keyword", "START")),
    ("source_kind", set_field(fact(fact="OPT_OUT_FAILED"), "source_kind", "KEYWORD")),
    ("facts emptied", emptied("consent_facts")),
    ("fact dropped", dropped_claim),
    ("messages emptied", emptied("messages")),
    ("timeline emptied", emptied_timeline),
    ("report time", set_field(report("B", "DELIVERED"), "event_time", f"{DAY}12:59:00.000000Z")),
    ("report status", set_field(report("D", "QUEUED_ON_CHANNEL"), "status", "FAILED")),
    ("report identity", set_field(report("A", "DELIVERED"), "identity", "46700000002")),
    ("raw text", edited_raw),
    ("received_at", set_field(callback_of("R-IN"), "received_at", "2020-01-01T00:00:00Z")),
    ("headers", set_field(callback_of("R-IN"), "headers", {"x-forged": "1"})),
    ("subject identity", set_field(whole("subject"), "identity", "+46700000002")),
    ("subject channel", set_field(whole("subject"), "channel", "WHATSAPP")),
    ("erasure claimed", set_field(whole("subject"), "erasure", {"subject": "x"})),
    ("sealed_at", set_field(lambda b: (b["seals"][0], "seals[0]"), "sealed_at", "2024-06-15")),
    ("head sealed_at", set_field(whole("head"), "sealed_at", "2024-06-15")),
    ("exported_at", lambda b: b.update(exported_at="2024-06-15") or "exported_at"),
    ("keywords", unread_keyword),
    ("window", set_field(whole("subject"), "since", f"{DAY}12:00:00.000000Z")),
    ("event twice", lambda b: b["events"].append(b["events"][-1]) or "notification_id"),
]


def test_each_edited_claim_is_named(
    story: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every edit of EDITS, each on a fresh copy of one recorded story's bundle (the story is
    recorded once: it is what takes the time)."""
    missed = []
    for case, edit in EDITS:
        bundle = orjson.loads(story.read_bytes())
        named = edit(bundle)
        code, said = verified(tampered(tmp_path, bundle, "edited"), capsys)
        if code != 1 or named not in said:
            missed.append((case, named, code, said))
    assert not missed


def test_an_unedited_bundle_verifies_and_shows_what_the_read_side_does(
    story: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = orjson.loads(story.read_bytes())
    code, said = verified(story, capsys)
    assert code == 0 and f"{len(bundle['events'])} events" in said, said
    facts = [(f["fact"], f["effect"], f["identity"]) for f in bundle["consent_facts"]]
    assert facts == [
        ("KEYWORD_OPT_OUT", "OPTED_OUT", "46700000001"),
        ("OPT_IN_SUCCEEDED", "OPTED_IN", "46700000001"),
        ("OPT_OUT_FAILED", None, "46700000001"),
        ("OPT_OUT_SUCCEEDED", "OPTED_OUT", "46700000001"),
        ("OPT_OUT_SUCCEEDED", "OPTED_OUT", ""),  # the contact's whole channel
    ]
    assert [m["message_id"] for m in bundle["messages"]] == ["A", "B", "D"]
    stop = next(
        e for e in bundle["events"] if e["reference"] == bundle["consent_facts"][0]["source_ref"]
    )
    assert " Stop " in stop["callback"]["raw"]
    assert bool(bundle["keys"]) == any(
        base64.b64decode(e["state"])[:3] == b"CLE" for e in bundle["events"]
    )
    assert "sealed_at" not in bundle["head"] and "exported_at" not in bundle
    assert standalone(readme_script(tmp_path), story).returncode == 0


def test_verify_as_a_command_names_an_edited_fact(story: Path, tmp_path: Path) -> None:
    bundle = orjson.loads(story.read_bytes())
    i = index_of(bundle["consent_facts"], fact="OPT_OUT_SUCCEEDED", request_id="R-OUT")
    bundle["consent_facts"][i]["fact"] = "OPT_IN_SUCCEEDED"
    url = "sqlite:////nonexistent/dir/ledger.sqlite3"  # verify must not need it
    done = check(url, tampered(tmp_path, bundle, "forged"))
    assert done.returncode == 1 and f"consent_facts[{i}].fact" in done.stderr, done.stderr
    assert check(url, story).returncode == 0


def test_the_standalone_script_names_what_it_can_check(story: Path, tmp_path: Path) -> None:
    """Bytes, digests, chain, references and the fields a bundle may hold: standard library
    only (the claims inside the compressed states: `evidence verify` alone)."""
    script = readme_script(tmp_path)
    cases: list[tuple[str, Edit]] = [
        ("sealed_at", set_field(lambda b: (b["seals"][0], "seals[0]"), "sealed_at", "x")),
        ("exported_at", lambda b: b.update(exported_at="x") or "exported_at"),
        ("digest", set_field(lambda b: (b["events"][0], "events[0]"), "digest", "00" * 32)),
        ("callback stream", set_field(callback_of("R-IN"), "stream", str(UUID(int=1)))),
    ]
    for case, edit in cases:
        bundle = orjson.loads(story.read_bytes())
        edit(bundle)
        done = standalone(script, tampered(tmp_path, bundle, case))
        assert done.returncode != 0, case


def test_an_erased_subjects_bundle_binds_its_erasure(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(
        keys=KEYS, database_url=database_url, webhook_secrets=(SECRET,), db_timeout_s=3
    )
    runtime = Runtime(settings)
    try:
        ledger = runtime.ledger()
        key = make_key(database_url, "evidence-admin")
        with TestClient(
            create_app(settings, ledger), headers={"Authorization": f"Bearer {key}"}
        ) as client:
            feed(client, STORY)
            erase(ledger, ledger.vault.index("SMS", NUMBER))
            wait_for_projections(client)
            found = bundles.bundle(
                ledger, runtime.store_database(), runtime.database(), "SMS", NUMBER
            )
    finally:
        runtime.close()
    path = tampered(tmp_path, found, "erased")
    assert verified(path, capsys)[0] == 0
    assert found["subject"]["erasure"]["reason"] == "data subject request"
    opt_out = index_of(found["consent_facts"], fact="OPT_OUT_SUCCEEDED", request_id="R-OUT")
    assert found["consent_facts"][opt_out]["identity"] is None
    for field, value in [("reason", "a court order"), ("erased_at", "2020-01-01")]:
        bundle = orjson.loads(path.read_bytes())
        bundle["subject"]["erasure"][field] = value
        code, said = verified(tampered(tmp_path, bundle, field), capsys)
        assert code == 1 and f"subject.erasure.{field}" in said, said
    bundle = orjson.loads(path.read_bytes())
    del bundle["subject"]["erasure"]
    code, said = verified(tampered(tmp_path, bundle, "unerased"), capsys)
    assert code == 1 and "subject.erasure" in said, said
    bundle = orjson.loads(path.read_bytes())
    bundle["consent_facts"][opt_out]["effect"] = "OPTED_IN"
    code, said = verified(tampered(tmp_path, bundle, "effect"), capsys)
    assert code == 1 and f"consent_facts[{opt_out}].effect" in said, said


def test_the_data_keys_a_bundle_carries_open_exactly_its_events(
    backend: str,
    stories: Callable[[str, str], Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An encrypted store's bundle opens its events with the keys it carries: a key replaced
    is named; a key left out leaves the claims it opened unbound, and is named by them."""
    path = stories(backend, "encrypted")
    bundle = orjson.loads(path.read_bytes())
    sealed = [e for e in bundle["events"] if base64.b64decode(e["state"])[:3] == b"CLE"]
    assert sealed and len(sealed) == len(bundle["events"])
    # The number and the STOP are in no stored state as plaintext: only the keys open them.
    assert all(b"STOP" not in base64.b64decode(e["state"]) for e in sealed)
    key_id = next(iter(bundle["keys"]))
    bundle["keys"][key_id] = base64.b64encode(bytes(32)).decode()
    code, said = verified(tampered(tmp_path, bundle, "wrong-key"), capsys)
    assert code == 1 and f"keys.{key_id}" in said, said
    bundle = orjson.loads(path.read_bytes())
    bundle["keys"] = {}
    code, said = verified(tampered(tmp_path, bundle, "no-keys"), capsys)
    assert code == 1 and "subject.identity" not in said and "events[0].callback" in said, said


def test_a_whole_channel_fact_comes_with_the_event_that_binds_its_contact(
    story_settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A contact seen with the number only in a report outside the window: its whole-channel
    opt-out is in the bundle with that report, which binds it to the number (and shows no
    timeline, being outside the window)."""
    body = p.opt("OPT_OUT", contact_id="CONTACT9", request_id="R-9", event_time=f"{DAY}16:00:00Z")
    del body["opt_out_notification"]["identity"]
    seen = p.delivery("M9", "DELIVERED", "SMS", NUMBER, f"{DAY}09:00:00Z", contact_id="CONTACT9")
    path = recorded(story_settings, tmp_path, [seen, body], since=f"{DAY}10:00:00Z")
    bundle = orjson.loads(path.read_bytes())
    assert [(f["fact"], f["contact_id"], f["identity"]) for f in bundle["consent_facts"]] == [
        ("OPT_OUT_SUCCEEDED", "CONTACT9", "")
    ]
    assert bundle["messages"] == [] and len(bundle["events"]) == 2
    assert verified(path, capsys)[0] == 0
    report = next(e for e in bundle["events"] if e["reference"].endswith("|DELIVERED"))
    bundle["events"].remove(report)
    code, said = verified(tampered(tmp_path, bundle, "unlinked"), capsys)
    assert code == 1 and "whole channel" in said, said
