"""Logs: one JSON line per request with its id, route, status and time (and a callback's
trigger and outcome), debug lines per group commit and projection page, and never a full
phone number, a bearer token, an API key or the webhook secret."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import orjson

from tests import payloads as p
from tests.conftest import SECRET
from tests.helpers import cli, make_key
from tests.server import Server
from tests.unit.test_logs import NUMBER


def test_a_bad_format_stops_every_command(database_url: str) -> None:
    done = cli(database_url, "quarantine", LEDGER_LOG_FORMAT="yaml")
    assert done.returncode == 2
    assert "LEDGER_LOG_FORMAT must be json or text" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_log_of_a_real_server(database_url: str, tmp_path: Path) -> None:
    # A key made before the first start: serve then prints none (the one key it ever shows,
    # once, outside the log's formatter; see first_key in cli.py).
    make_key(database_url, "made-before")
    server = Server(
        {
            "LEDGER_DATABASE_URL": database_url,
            "SINCH_WEBHOOK_SECRET": SECRET,
            "LEDGER_LOG_FORMAT": "json",
        },
        tmp_path / "server.log",
        ("--log-level", "debug"),
    )
    bearer = "clk_ThisIsAnApiKeyThatMustNeverBeLogged0123"
    other_token = "opaque-token-value-9f8e7d"
    sent: dict[str, dict[str, object]] = {}

    def request(request_id: str, method: str, path: str, expect: dict[str, object], **kw):
        headers = {"X-Request-ID": request_id, **kw.pop("headers", {})}
        response = httpx.request(method, server.url + path, headers=headers, timeout=30, **kw)
        assert response.headers["x-request-id"] == request_id
        sent[request_id] = {"status": response.status_code, **expect}
        return response

    def callback(request_id: str, body: dict | bytes, secret: str = SECRET, **expect: object):
        raw = p.encode(body)
        return request(
            request_id,
            "POST",
            "/webhooks/sinch",
            {"route": "/webhooks/sinch", **expect},
            content=raw,
            headers={**p.signed_headers(raw, secret), "Authorization": f"Bearer {bearer}"},
        )

    try:
        report = p.delivery("M1", "DELIVERED", identity=f"+{NUMBER}")
        callback("cb-1", report, trigger="MESSAGE_DELIVERY", outcome="accepted")
        callback("cb-2", report, trigger="MESSAGE_DELIVERY", outcome="duplicate")
        text = f"Please call me on +{NUMBER} or 0046 73 200 11 22"
        stop = p.inbound("IN1", text=text, identity=f"+{NUMBER}")
        callback("cb-3", stop, trigger="MESSAGE_INBOUND", outcome="accepted")
        no_id = p.delivery("M2", identity=NUMBER)
        del no_id["message_delivery_report"]["message_id"]
        callback("cb-4", no_id, trigger="MESSAGE_DELIVERY", outcome="invalid")
        callback("cb-5", report, secret="not-the-secret", outcome="unsigned_rejected")
        callback("cb-6", f'{{"identity": "{NUMBER}"'.encode(), outcome="quarantined")
        request(
            "q-1",
            "GET",
            "/consent/check",
            {"route": "/consent/check"},
            params={"channel": "SMS", "identity": f"+{NUMBER}"},
            headers={"Authorization": f"Bearer {other_token}"},
        )
        request(
            "q-2",
            "GET",
            f"/callbacks/{NUMBER}",
            {"route": "/callbacks/{reference:path}"},
            headers={"Authorization": f"Bearer {bearer}"},
        )
        request("q-3", "GET", f"/no/such/{NUMBER}", {"route": "unmatched"})
        made = httpx.get(
            server.url + "/healthz", headers={"X-Request-ID": "a b\tc"}, timeout=30
        ).headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{24}", made)
        sent[made] = {"status": 200, "route": "/healthz"}
        # Give the follower time to apply a page (logged at debug).
        for _ in range(100):
            health = httpx.get(server.url + "/healthz", headers=server.headers, timeout=30).json()
            if all(projection["lag"] == 0 for projection in health["projections"].values()):
                break
            time.sleep(0.1)
    finally:
        server.stop()

    log = server.log()
    lines = [orjson.loads(line) for line in log.splitlines()]  # every line is JSON
    requests = [line for line in lines if line["msg"] == "request"]
    by_id = {line["request_id"]: line for line in requests}
    for request_id, expected in sent.items():
        mine = [line for line in requests if line["request_id"] == request_id]
        assert len(mine) == 1, (request_id, mine)
        line = by_id[request_id]
        assert {"ts", "level", "method", "route", "status", "duration_ms"} <= line.keys()
        assert line["duration_ms"] >= 0
        for key, value in expected.items():
            assert line[key] == value, (request_id, key, line)
        assert ("outcome" in line) == (line["route"] == "/webhooks/sinch")
    messages = {line["msg"] for line in lines}
    assert {"group commit", "projection page"} <= messages
    commit = next(line for line in lines if line["msg"] == "group commit")
    assert commit["level"] == "debug" and commit["callbacks"] >= 1
    page = next(line for line in lines if line["msg"] == "projection page")
    assert page["level"] == "debug" and page["events"] >= 1
    # Nothing that identifies a person or opens a door.
    for secret in (NUMBER, NUMBER[1:], "732001122", bearer, other_token, SECRET, "Bearer "):
        assert secret not in log, secret
