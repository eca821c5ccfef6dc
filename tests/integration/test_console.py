"""The web console over HTTP (no browser): each page's answers and scopes, escaping of hostile
text, CSRF on the forms, the session cookie's flags, revocation, quarantine resolution and the
compliance CSV. tests/e2e/test_console_browser.py drives the same pages in a real Chromium."""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import re
from pathlib import Path
from urllib.parse import quote

import pytest
from starlette.testclient import TestClient

from api.app import create_app
from api.console.routes import CONSOLE_SCOPES
from service.settings import Settings, backend_for
from store.backend import Database
from store.ledger import Ledger
from tests import console_data as data
from tests.e2e.test_keys import revoke
from tests.helpers import KEYS, make_key, names, starlette_app, stored_events
from tests.integration.test_queries import feed, post

PAGES = [
    "/console/search?q=MSG-1",
    "/console/messages/MSG-1",
    f"/console/numbers/{data.NUMBER}",
    "/console/contacts/CONTACT1",
    f"/console/overview?since={data.SINCE}&until={data.UNTIL}",
    "/console/quarantine",
    "/console/callbacks?trigger=CONTACT_MERGE",
    "/console/health",
    "/console/compliance",
    "/console/compliance.csv",
]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def fed(client: TestClient, ledger: Ledger) -> TestClient:
    data.quarantine_acceptable(ledger)
    raw = data.REFUSED
    from tests import payloads as p
    from tests.conftest import SECRET

    answer = client.post("/webhooks/sinch", content=raw, headers=p.signed_headers(raw, SECRET))
    assert answer.status_code == 400
    return feed(client, data.story())


def quarantine_ids(client: TestClient) -> list[int]:
    return [
        int(i)
        for i in re.findall(
            r'href="/console/quarantine/(\d+)"', client.get("/console/quarantine").text
        )
    ]


def sign_in(client: TestClient, key: str) -> None:
    client.headers.pop("Authorization", None)
    form = client.get("/console/sign-in")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert token is not None
    answer = client.post(
        "/console/sign-in",
        data={"csrf": token.group(1), "key": key, "next": "/console/search"},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/console/search"


def test_every_console_route_has_a_scope(client: TestClient) -> None:
    paths = {r.path for r in starlette_app(client).routes if r.path.startswith("/console")}
    assert paths == set(CONSOLE_SCOPES)
    assert CONSOLE_SCOPES["/console/quarantine/{entry_id}/resolve"] == "admin"
    assert CONSOLE_SCOPES["/console/callbacks/{reference:path}"] == "audit"
    assert CONSOLE_SCOPES["/console/compliance.csv"] == "audit"
    assert CONSOLE_SCOPES["/console/search"] == "read"


def test_pages_answer_with_a_bearer_key(fed: TestClient) -> None:
    for url in PAGES:
        answer = fed.get(url)
        assert answer.status_code == 200, (url, answer.text[:500])
        assert answer.headers["cache-control"] == "no-store"
        if not url.endswith(".csv"):
            assert answer.headers["content-type"].startswith("text/html")
            assert '<meta name="viewport"' in answer.text
            assert "Content-Security-Policy" in answer.headers
    css = fed.get("/console/static/console.css", headers={"Authorization": ""})
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")


def test_scopes_each_page_needs(fed: TestClient, settings: Settings) -> None:
    url = settings.database_url
    read = make_key(url, "console-read", ("read",))
    audit = make_key(url, "console-audit", ("read", "audit"))
    metrics = make_key(url, "console-metrics", ("metrics",))
    needs_audit = {
        "/console/quarantine",
        "/console/callbacks",
        "/console/compliance",
        "/console/compliance.csv",
    }
    for page in PAGES:
        path = page.split("?")[0]
        answer = fed.get(page, headers=bearer(read))
        if path in needs_audit:
            assert answer.status_code == 403, page
            assert "lacks the &#39;audit&#39; scope" in answer.text
        else:
            assert answer.status_code == 200, page
        assert fed.get(page, headers=bearer(audit)).status_code == 200, page
        if path != "/console/health":
            assert fed.get(page, headers=bearer(metrics)).status_code == 403, page
    # A read key sees the number's current consent but not its history or violations.
    number = fed.get(f"/console/numbers/{data.NUMBER}", headers=bearer(read)).text
    assert "OPTED_OUT" in number and 'id="history"' not in number and "need the audit" in number
    # No key: a browser goes to the sign-in form; a bad key is told so.
    answer = fed.get("/console/search?q=x", headers={"Authorization": ""}, follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/console/sign-in?next=%2Fconsole%2Fsearch")
    assert fed.get("/console/search", headers=bearer("clk_nope")).status_code == 401
    # Resolving needs admin.
    entry = quarantine_ids(fed)[0]
    answer = fed.post(
        f"/console/quarantine/{entry}/resolve",
        data={"action": "review", "note": "x"},
        headers=bearer(audit),
    )
    assert answer.status_code == 403


def test_search_finds_a_number_in_any_format_and_ids(fed: TestClient) -> None:
    page = fed.get("/console/search", params={"q": data.NUMBER_AS_TYPED}).text
    assert f'href="/console/numbers/{data.NUMBER}"' in page
    assert 'href="/console/contacts/CONTACT1"' in page
    for q in ["MSG-1", "order-777", "CONTACT1", "CONV1"]:
        page = fed.get("/console/search", params={"q": q}).text
        assert 'href="/console/messages/MSG-1?project_id=PROJECT1"' in page, q


def test_message_timeline_in_event_time_order_with_arrivals(fed: TestClient) -> None:
    page = fed.get("/console/messages/MSG-1").text
    rows = re.findall(r'<time class="event-time">([^<]+)</time>', page)
    assert rows == sorted(rows) and len(rows) == 3
    statuses = re.findall(r'class="badge s-[a-z_]+ status">([A-Z_]+)</span>', page)
    assert statuses == ["QUEUED_ON_CHANNEL", "DELIVERED", "READ"]
    # DELIVERED reached us before QUEUED, whose event time is earlier: marked out of order.
    assert page.count('class="out-of-order') == 1
    assert "arrived before an earlier one" in page
    arrived = re.findall(r'<time class="arrived">([^<]+)</time>', page)
    assert len(arrived) == 3 and arrived[1] < arrived[0]
    assert page.count('href="/console/callbacks/') == 3


def test_hostile_text_is_escaped(fed: TestClient, ledger: Ledger) -> None:
    pages = [
        fed.get("/console/messages/MSG-2").text,
        fed.get("/console/search", params={"q": data.HOSTILE}).text,
        fed.get("/console/search", params={"q": "CONTACT1"}).text,
        fed.get("/console/compliance").text,
    ]
    for entry in quarantine_ids(fed):
        pages.append(fed.get(f"/console/quarantine/{entry}").text)
    assert any("&lt;script&gt;" in page for page in pages)
    for page in pages:
        assert "<script>" not in page


def test_number_page_consent_and_violation(fed: TestClient) -> None:
    page = fed.get(f"/console/numbers/{data.NUMBER}").text
    assert "OPTED_OUT" in page and 'id="violations"' in page and "MSG-1" in page
    asked = fed.get(
        f"/console/numbers/{data.NUMBER}",
        params={"channel": "WHATSAPP", "at": "2024-06-15T08:00:00Z"},
    ).text
    assert re.search(r'id="at-answer">.*UNKNOWN', asked)
    asked = fed.get(
        f"/console/numbers/{data.NUMBER}",
        params={"channel": "WHATSAPP", "at": "2024-06-15T09:30:00Z"},
    ).text
    assert re.search(r'id="at-answer">.*OPTED_OUT', asked)
    contact = fed.get("/console/contacts/CONTACT1").text
    assert 'id="violations"' in contact and "OPTED_OUT" in contact


def test_compliance_csv(fed: TestClient) -> None:
    answer = fed.get("/console/compliance.csv", params={"since": data.SINCE})
    assert answer.headers["content-type"].startswith("text/csv")
    assert "attachment" in answer.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert [(r["message_id"], r["channel"], r["identity"]) for r in rows] == [
        ("MSG-1", "WHATSAPP", data.NUMBER)
    ]
    assert rows[0]["proof_source_ref"]
    # The access log says who took the file and how many rows it held.
    empty = fed.get("/console/compliance.csv", params={"since": "9999-01-01T00:00:00Z"})
    assert list(csv.DictReader(io.StringIO(empty.text))) == []
    logged = [
        e["results"]
        for e in fed.get("/access-log").json()["items"]
        if e["route"] == "/console/compliance.csv"
    ]
    assert logged == [1, 0]


def test_quarantine_reingest_and_review_are_recorded_once(
    fed: TestClient, settings: Settings
) -> None:
    entries = quarantine_ids(fed)
    assert len(entries) == 2
    texts = {e: fed.get(f"/console/quarantine/{e}").text for e in entries}
    acceptable = next(e for e, t in texts.items() if "MSG-3" in t)
    refused = next(e for e in entries if e != acceptable)
    # The refused one cannot be re-ingested: it stays open.
    answer = fed.post(f"/console/quarantine/{refused}/resolve", data={"action": "reingest"})
    assert answer.status_code == 422
    answer = fed.post(f"/console/quarantine/{refused}/resolve", data={"action": "review"})
    assert answer.status_code == 400  # a note is needed
    answer = fed.post(
        f"/console/quarantine/{refused}/resolve",
        data={"action": "review", "note": "a test probe <b>"},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    page = fed.get(f"/console/quarantine/{refused}").text
    assert "reviewed" in page and "a test probe &lt;b&gt;" in page
    answer = fed.post(
        f"/console/quarantine/{acceptable}/resolve",
        data={"action": "reingest"},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    assert "reingested" in fed.get(f"/console/quarantine/{acceptable}").text
    again = fed.post(f"/console/quarantine/{acceptable}/resolve", data={"action": "reingest"})
    assert again.status_code == 409
    feed(fed, [])
    assert fed.get("/messages/MSG-3").json()["status"] == "DELIVERED"
    events = stored_events(settings.database_url)
    assert names(events).count("QuarantinedCallback.Resolved") == 2
    assert names(events).count("QuarantinedCallback.Quarantined") == 2  # nothing deleted
    msg3 = [e for e in events if getattr(e, "message_id", None) == "MSG-3"]
    assert len(msg3) == 1
    # Its original receipt: it arrived at 12:00:03, not now.
    assert msg3[0].callback["received_at"].startswith("2024-06-15T12:00:03")
    listing = fed.get("/console/quarantine").text
    assert listing.count('class="badge resolved"') == 2


def test_sign_in_csrf_cookie_flags_sign_out_and_revocation(
    fed: TestClient, settings: Settings
) -> None:
    key = make_key(settings.database_url, "console-user", ("read", "audit", "admin"))
    fed.headers.pop("Authorization", None)
    # Without the form's token (or with another one) the sign-in is refused.
    assert fed.post("/console/sign-in", data={"key": key}).status_code == 403
    fed.get("/console/sign-in")
    assert fed.post("/console/sign-in", data={"key": key, "csrf": "forged"}).status_code == 403
    form = fed.get("/console/sign-in").text
    token = re.search(r'name="csrf" value="([^"]+)"', form).group(1)  # type: ignore[union-attr]
    wrong = fed.post("/console/sign-in", data={"key": "clk_wrong", "csrf": token})
    assert wrong.status_code == 401
    answer = fed.post(
        "/console/sign-in",
        data={"key": key, "csrf": token, "next": "https://evil.example/"},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/search"  # no open redirect
    cookie = next(
        v for v in answer.headers.get_list("set-cookie") if v.startswith("ledger_console=")
    )
    flags = cookie.lower()
    assert "httponly" in flags and "samesite=strict" in flags and "path=/console" in flags
    assert key not in cookie  # the key itself is never in the cookie
    assert "secure" not in flags  # plain http here; https sets Secure
    page = fed.get("/console/search", follow_redirects=False)
    assert page.status_code == 200 and "console-user" in page.text
    # Forms of a session need its CSRF token.
    entry = quarantine_ids(fed)[0]
    answer = fed.post(
        f"/console/quarantine/{entry}/resolve", data={"action": "review", "note": "n"}
    )
    assert answer.status_code == 403
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    answer = fed.post(
        f"/console/quarantine/{entry}/resolve",
        data={"action": "review", "note": "n", "csrf": csrf},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    # A forged (unsigned) cookie is no session.
    fed.cookies.set("ledger_console", "forged", path="/console")
    assert fed.get("/console/search", follow_redirects=False).status_code == 303
    fed.cookies.clear()
    sign_in(fed, key)
    assert fed.get("/console/search", follow_redirects=False).status_code == 200
    # Revoking the key ends its sessions at once (no cache).
    revoke(settings.database_url, "console-user")
    assert fed.get("/console/search", follow_redirects=False).status_code == 401
    # Sign out clears the cookie.
    other = make_key(settings.database_url, "console-other", ("read",))
    fed.cookies.clear()
    sign_in(fed, other)
    page = fed.get("/console/search").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    copied = fed.cookies.get("ledger_console", path="/console")
    assert copied
    out = fed.post("/console/sign-out", data={"csrf": csrf}, follow_redirects=False)
    assert out.status_code == 303
    assert fed.get("/console/search", follow_redirects=False).status_code == 303
    # Signing out ends the session in the store: a copy of the cookie taken before is no use.
    fed.cookies.set("ledger_console", copied, path="/console")
    assert fed.get("/console/search", follow_redirects=False).status_code == 303


def test_the_store_holds_no_usable_session(fed: TestClient, settings: Settings) -> None:
    """A copy of the database (a backup, a replica) cannot be turned into a console session:
    the store keeps only a hash of each session id, and the cookie holds nothing else."""
    key = make_key(settings.database_url, "console-copy", ("read", "audit", "admin"))
    sign_in(fed, key)
    cookie = fed.cookies.get("ledger_console", path="/console")
    assert cookie
    db = Database(backend_for(settings.database_url))
    try:
        with db.read() as cur:
            [row] = cur.execute("SELECT * FROM ledger_console_sessions").fetchall()
    finally:
        db.close()
    assert cookie not in str(row.values())
    assert row["id_hash"] == hashlib.sha256(cookie.encode()).hexdigest()
    fed.cookies.clear()
    for forged in (row["id_hash"], row["key_hash"]):
        fed.cookies.set("ledger_console", forged, path="/console")
        assert fed.get("/console/search", follow_redirects=False).status_code == 303


def test_search_queries_do_not_reach_the_log(
    fed: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="callback_ledger.access"):
        fed.get("/console/search", params={"q": data.NUMBER})
        fed.get(f"/console/numbers/{quote(data.NUMBER)}")
    # The server's own lines (the test's HTTP client logs its URLs itself: not the server's).
    lines = [
        str(getattr(r, "fields", "")) + r.getMessage()
        for r in caplog.records
        if r.name.startswith(("callback_ledger", "uvicorn"))
    ]
    assert lines
    assert not [line for line in lines if data.NUMBER in line]


def test_a_post_for_the_webhook_is_not_a_console_form(fed: TestClient) -> None:
    post(fed, data.story()[1])  # the webhook still answers as before beside the console


def test_a_store_that_cannot_be_reached_is_a_503_page(tmp_path: Path) -> None:
    settings = Settings(keys=KEYS, database_url=f"sqlite:///{tmp_path}/no/such/dir/x.sqlite3")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        answer = client.get("/console/search", headers=bearer("clk_" + "A" * 43))
        assert answer.status_code == 503
        assert answer.headers["content-type"].startswith("text/html")
        assert "The store is unavailable" in answer.text


def test_odd_ids_and_queries_are_answered_not_failed(fed: TestClient) -> None:
    for url, status in [
        ("/console/messages/a%00b", 400),
        ("/console/numbers/%ED%A0%80", 200),  # decoded with replacement characters
        ("/console/quarantine/99999999999999999999999", 404),
        ("/console/callbacks/not-a-reference", 404),
        ("/console/search?q=a%00b", 200),
        ("/console/search?q=%ED%A0%80", 200),
        ("/console/overview?since=yesterday&channel=<b>", 200),
        ("/console/overview?until=0001-01-01T00:00:00Z", 200),
        ("/console/overview?since=9999-12-31T23:59:59Z&until=9999-12-31T23:59:59Z", 200),
        ("/console/compliance?since=0001-01-01T00:00:00Z&until=9999-12-31T23:59:59Z", 200),
        ("/console/numbers/46732001122?channel=SMS&at=0001-01-01T00:00:00Z", 200),
        ("/console/compliance?since=never", 200),
        ("/console/numbers/46732001122?channel=SMS&at=soon", 200),
        ("/console/quarantine?after=99999999999999999999999", 200),
    ]:
        answer = fed.get(url)
        assert answer.status_code == status, (url, answer.text[:300])
        if not url.endswith(".csv"):
            assert answer.headers["content-type"].startswith("text/html"), url


def test_a_quarantined_body_whose_key_was_destroyed_reads_as_erased(
    fed: TestClient, ledger: Ledger
) -> None:
    """Retention (or an erasure) destroyed the key of a quarantined body: its page still
    answers, and there is nothing to feed back."""
    entries = quarantine_ids(fed)
    keys = ledger.vault.keys
    assert keys is not None
    assert keys.destroy_expired("m", "9999-99") > 0  # every message-class key
    ledger.vault.forget(everything=True)
    for entry in entries:
        assert fed.get(f"/console/quarantine/{entry}").status_code == 200
        answer = fed.post(f"/console/quarantine/{entry}/resolve", data={"action": "reingest"})
        assert answer.status_code == 409 and "erased" in answer.text.lower()
    answer = fed.get("/quarantine")
    assert answer.status_code == 200, answer.text
