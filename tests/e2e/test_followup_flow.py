"""Delivery follow-up end to end, on both backends: next actions through the API and
the CLI, the consent override, messages that went quiet, MESSAGE_SUBMIT in the timeline (new
callbacks and those an earlier version kept in the catch-all) and replay equality."""

from __future__ import annotations

import orjson
from starlette.testclient import TestClient

from api.app import create_app
from projections import rules
from service.replay import replay
from service.runtime import Runtime
from service.settings import Settings
from store.ledger import Ledger
from tests import payloads as p
from tests.helpers import accept_all, cli, projection_rows
from tests.integration.test_followup_flow import NUMBER, ago, failed, keep_in_catch_all


def test_submissions_kept_by_an_earlier_version_are_recorded_by_reinterpret(
    ledger: Ledger, settings: Settings, database_url: str
) -> None:
    from projections.read_model import callbacks

    # As 501b7cc left a store: a submission in the catch-all, before and after the message's
    # first report (pages of one event apart when followed: the row exists before either).
    keep_in_catch_all(ledger, p.submit("OLD", "SMS", event_time="2024-06-15T14:25:08Z"))
    accept_all(ledger, [p.delivery("OLD", "QUEUED_ON_CHANNEL", "SMS")])
    keep_in_catch_all(ledger, p.submit("OLD", "WHATSAPP", event_time="2024-06-15T14:25:07Z"))
    broken = p.submit("OLD2")
    del broken["message_submit_notification"]["message_id"]
    keep_in_catch_all(ledger, broken)
    done = cli(database_url, "reinterpret")
    assert done.returncode == 0, done.stderr
    assert "recorded 2, already recorded 0, left in the catch-all 1" in done.stdout
    again = cli(database_url, "reinterpret")
    assert "recorded 0, already recorded 2, left in the catch-all 1" in again.stdout
    runtime = Runtime(settings, ledger)
    try:
        runtime.projector().catch_up()
        [row] = projection_rows(database_url)["message_status"]
        assert row["submitted_at"] == "2024-06-15T14:25:07.000000Z"
        timeline = rules.expanded_reports(row)
        assert [(r["status"], r["channel"]) for r in timeline] == [
            ("SUBMITTED", "WHATSAPP"),
            ("SUBMITTED", "SMS"),
            ("QUEUED_ON_CHANNEL", "SMS"),
        ]
        # Each reference gives the body exactly as it arrived then.
        raws = [callbacks.callback(ledger, r["source_ref"])["raw"] for r in timeline]
    finally:
        runtime.close()
    assert all("message_submit_notification" in raw for raw in raws[:2])
    live = projection_rows(database_url)
    replay(settings, None)
    assert projection_rows(database_url) == live


def test_the_followup_command(ledger: Ledger, settings: Settings, database_url: str) -> None:
    accept_all(
        ledger,
        [
            failed("RETRY", "CHANNEL_FAILURE", metadata="order-9"),
            failed("GONE", "RECIPIENT_NOT_REACHABLE"),
            p.delivery("OK", "DELIVERED", "SMS"),
            p.delivery("QUIET", "QUEUED_ON_CHANNEL", "SMS", event_time=ago(days=2)),
        ],
    )
    runtime = Runtime(settings, ledger)
    runtime.projector().catch_up()
    runtime.close()
    done = cli(database_url, "followup", "--format", "json")
    assert done.returncode == 0, done.stderr
    listed = orjson.loads(done.stdout)
    # Oldest first, then by id (both reported at the same instant).
    assert [(m["message_id"], m["next_action"], m["identity"]) for m in listed] == [
        ("GONE", "do_not_retry", NUMBER),
        ("RETRY", "retry_later", NUMBER),
    ]
    only = orjson.loads(
        cli(database_url, "followup", "--action", "do_not_retry", "--format", "json").stdout
    )
    assert [m["message_id"] for m in only] == ["GONE"]
    quiet = cli(database_url, "followup", "--stalled", "--format", "csv")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.splitlines()[0].startswith("project_id,message_id,")
    assert [line.split(",")[1] for line in quiet.stdout.splitlines()[1:]] == ["QUIET"]
    bad = cli(database_url, "followup", "--stalled", "soon")
    assert bad.returncode == 2
    assert "not a duration" in bad.stderr


def test_the_override_is_never_skipped_while_consent_is_behind(
    ledger: Ledger, settings: Settings, database_url: str, admin_key: str
) -> None:
    """An opt-out recorded but not yet projected: the follow-up must not say retry."""
    from dataclasses import replace

    off = replace(settings, projections="off")  # no follower: nothing is projected
    accept_all(ledger, [failed("RETRY", "CHANNEL_FAILURE")])
    runtime = Runtime(settings)  # a ledger of its own: closing it leaves the fixture's open
    runtime.projector().catch_up()
    runtime.close()
    accept_all(ledger, [p.opt("OPT_OUT", identity=NUMBER, request_id="R9")])
    bearer = {"Authorization": f"Bearer {admin_key}"}
    app = create_app(off, ledger)
    with TestClient(app, raise_server_exceptions=False, headers=bearer) as client:
        assert (
            client.get("/consent/check", params={"channel": "SMS", "identity": NUMBER}).status_code
            == 503
        )
        shown = client.get("/messages/RETRY").json()
        assert shown["next_action"] == "review"
        assert "consent cannot be checked now" in shown["next_action_why"]
        listed = client.get("/messages", params={"next_action": "retry_later"}).json()
        assert listed["items"] == []
    done = cli(database_url, "followup", "--format", "json")
    assert done.returncode == 0, done.stderr
    assert "consent cannot be checked now" in done.stderr
    assert [m["next_action"] for m in orjson.loads(done.stdout)] == ["review"]
