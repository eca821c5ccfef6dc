"""GET /callbacks: what the store keeps, interpreted or kept in the catch-all (CONTACT_CREATE and
the other triggers this version does not interpret), by trigger and arrival window, in pages;
audit scope; no bodies. Real Sinch bodies (../shared/fixtures), both backends; the listing reads
an index on both (projections.callbacks)."""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from html import unescape as html_unescape
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import orjson
import pytest
from starlette.testclient import TestClient

from api.console import callbacks as callbacks_page
from projections import callbacks as projection
from projections.read_model import callbacks
from service.replay import replay
from service.settings import Settings, backend_for
from store.backend import Cursor, Database
from tests import payloads as p
from tests.helpers import cli, make_key, projection_rows
from tests.integration.test_queries import wait_for_projections
from tests.integration.test_real_callbacks import post
from tests.unit.test_real_callbacks import FIXTURES

CREATES = sorted(FIXTURES.glob("CONTACT_CREATE__*.json"))
OTHERS = [
    FIXTURES / "EVENT_INBOUND__docs__1.json",
    FIXTURES / "MESSAGE_DELIVERY__docs__1.json",
    FIXTURES / "OPT_OUT__sdk-java__1.json",
    FIXTURES / "MESSAGE_INBOUND__docs__1.json",
]
ITEM_KEYS = {
    "reference",
    "trigger",
    "received_at",
    "event_time",
    "project_id",
    "app_id",
    "interpreted",
    "callback_url",
}


def sent(client: TestClient, paths: list[Path]) -> dict[str, dict[str, Any]]:
    """Posts each body; its webhook answer by the reference it names."""
    answers = {}
    for path in paths:
        answer = post(client, path.read_bytes()).json()
        assert answer["status"] == "accepted", (path.name, answer)
        answers[answer["reference"]] = answer
        time.sleep(0.002)  # distinct arrival times
    return answers


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_callbacks_are_listed_by_trigger_and_window_in_pages(client: TestClient) -> None:
    assert len(CREATES) >= 3
    before = now()
    early = sent(client, [*CREATES[:2], *OTHERS])
    middle = now()
    late = sent(client, CREATES[2:])
    wait_for_projections(client)

    creates = client.get("/callbacks", params={"trigger": "CONTACT_CREATE"}).json()
    assert creates["next_cursor"] is None
    items = creates["items"]
    assert [i["reference"] for i in items] == [*list(early)[:2], *late], "by arrival"
    for item in items:
        assert set(item) == ITEM_KEYS, "no body, no headers"
        assert item["trigger"] == "CONTACT_CREATE"
        assert item["interpreted"] is False
        assert before <= item["received_at"] <= now()
        assert item["callback_url"].startswith("/callbacks/")
        # The body is behind the audited read by reference.
        raw = client.get(item["callback_url"]).json()["raw"]
        assert "contact_create_notification" in raw
    # What the kept bodies say of themselves (the SDK's has an event time, the docs' none).
    docs, sdk = items[0], items[1]
    assert (docs["project_id"], docs["app_id"], docs["event_time"]) == (
        "c36f3a3d-1513-4edd-ae42-11995557ff61",
        "01EB37KMH1M6SV18ASNS3G135H",
        None,
    )
    assert (sdk["project_id"], sdk["app_id"], sdk["event_time"]) == (
        "project id value",
        "app id value",
        "2020-11-17T16:05:45.000000Z",
    )

    # The window: since <= arrival < until.
    window = {"trigger": "CONTACT_CREATE", "since": middle}
    assert [i["reference"] for i in client.get("/callbacks", params=window).json()["items"]] == (
        list(late)
    )
    window = {"trigger": "CONTACT_CREATE", "since": before, "until": middle}
    assert [i["reference"] for i in client.get("/callbacks", params=window).json()["items"]] == (
        list(early)[:2]
    )
    # A trigger in any case; an interpreted one says so.
    delivery = client.get("/callbacks", params={"trigger": "message_delivery"}).json()["items"]
    assert [(i["trigger"], i["interpreted"]) for i in delivery] == [("MESSAGE_DELIVERY", True)]
    assert delivery[0]["reference"] in early and delivery[0]["event_time"]

    # Without a trigger: everything kept, in pages of `limit`, each page after the last.
    every = [*early, *late]
    walked: list[str] = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        page = client.get("/callbacks", params=params).json()
        assert len(page["items"]) <= 2
        walked += [i["reference"] for i in page["items"]]
        if page["next_cursor"] is None:
            break
        params = {"limit": 2, "cursor": page["next_cursor"]}
    assert walked == every
    triggers = {i["trigger"] for i in client.get("/callbacks").json()["items"]}
    assert triggers == {
        "CONTACT_CREATE",
        "EVENT_INBOUND",
        "MESSAGE_DELIVERY",
        "OPT_OUT",
        "MESSAGE_INBOUND",
    }


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"trigger": "CONTACT CREATE"}, "trigger"),
        ({"since": "yesterday"}, "since"),
        ({"until": "2024-13-01T00:00:00Z"}, "until"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"cursor": "nope"}, "cursor"),
        ({"reference": "x"}, "reference"),
    ],
)
@pytest.mark.xdist_group("callback-list-refusals")  # one empty store per backend, shared
def test_a_bad_parameter_is_a_400_naming_it(
    empty_client: TestClient, params: dict[str, str], named: str
) -> None:
    answer = empty_client.get("/callbacks", params=params)
    assert answer.status_code == 400, answer.text
    assert named in answer.json()["detail"]


def test_the_list_needs_the_audit_scope(client: TestClient, database_url: str) -> None:
    reader = make_key(database_url, "reader", ("read",))
    auditor = make_key(database_url, "auditor", ("audit",))
    assert client.get("/callbacks", headers={"Authorization": ""}).status_code == 401
    denied = client.get("/callbacks", headers={"Authorization": f"Bearer {reader}"})
    assert denied.status_code == 403
    assert "audit" in denied.json()["detail"]
    allowed = client.get(
        "/callbacks",
        params={"trigger": "CONTACT_CREATE"},
        headers={"Authorization": f"Bearer {auditor}"},
    )
    assert allowed.status_code == 200
    # An audit read: the access log names who asked for what.
    logged = client.get("/access-log").json()["items"]
    mine = [e for e in logged if e["route"] == "/callbacks" and e["status"] == 200]
    assert [(e["actor"], e["subject"]) for e in mine] == [
        ("auditor", {"trigger": "CONTACT_CREATE"})
    ], logged


class Recording(Cursor):
    """A cursor that keeps the queries it ran."""

    def __init__(self, raw: Any, backend: Any) -> None:
        super().__init__(raw, backend)
        self.seen: list[tuple[str, list[Any]]] = []

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        self.seen.append((sql, list(params)))
        return super().execute(sql, params)


def test_listing_by_trigger_and_window_reads_an_index(database_url: str) -> None:
    """Both lists (of a trigger, of all) are a range of one index, in the list's order: no
    scan of the table and no sort, however many callbacks are kept."""
    db = Database(backend_for(database_url))
    table = "callbacks_g9"
    try:
        with db.transaction() as cur:
            for statement in projection.schema(9):
                cur.execute(statement)
            cur.executemany(
                f"INSERT INTO {table} (reference, trigger, received_at, interpreted) "
                "VALUES (?, ?, ?, 0)",
                [
                    (f"s{i}/received", f"T{i % 20}", f"2024-06-{1 + i % 28:02d}T00:00:{i:06d}Z")
                    for i in range(5000)
                ],
            )
            # What the lists read: the view over the active generation (projections.schema).
            cur.execute(f"CREATE VIEW callbacks AS SELECT * FROM {table}")
        with db.read() as cur:
            spy = Recording(cur.raw, cur.backend)
            window = ("2024-06-03T00:00:00Z", "2024-06-09T00:00:00Z")
            callbacks.listed(spy, "T7", *window, ["2024-06-04T00:00:00Z", "s1/received"], 10)
            callbacks.listed(spy, None, *window, None, 10)
            plans = []
            for sql, params in spy.seen:
                if db.backend.name == "sqlite":
                    rows = cur.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()
                    plans.append(" | ".join(row["detail"] for row in rows))
                else:
                    cur.execute(f"ANALYZE {table}")
                    rows = cur.execute(f"EXPLAIN {sql}", params).fetchall()
                    plans.append(" | ".join(row["QUERY PLAN"] for row in rows))
    finally:
        db.close()
    assert len(plans) == 2
    for plan, index in zip(plans, ("ix_cb_g9_trigger", "ix_cb_g9_arrival"), strict=True):
        assert index in plan, plan
        if db.backend.name == "sqlite":
            assert plan.startswith("SEARCH") and "TEMP B-TREE" not in plan, plan
        else:
            assert "Seq Scan" not in plan and "Sort" not in plan, plan


def test_the_cli_lists_them_in_pages_and_neutralises_csv_cells(
    client: TestClient, database_url: str
) -> None:
    creates = list(sent(client, CREATES))
    hostile = p.envelope(
        project_id='=HYPERLINK("http://x")',
        contact_create_notification={"contact": {}},
    )
    answer = post(client, p.encode(hostile)).json()
    assert answer["status"] == "accepted"
    sent(client, OTHERS)
    wait_for_projections(client)

    listed = cli(
        database_url, "callbacks", "list", "--trigger", "contact_create", "--format", "json"
    )
    assert listed.returncode == 0, listed.stderr
    body = orjson.loads(listed.stdout)
    assert [i["reference"] for i in body["items"]] == [*creates, answer["reference"]]
    assert {i["interpreted"] for i in body["items"]} == {False}
    assert "raw" not in listed.stdout and "contact_create_notification" not in listed.stdout
    assert body["next_cursor"] is None

    # Pages: --limit, then --cursor where the first page ended.
    first = cli(
        database_url,
        "callbacks",
        "list",
        "--trigger",
        "CONTACT_CREATE",
        "--limit",
        "3",
        "--format",
        "json",
    )
    page = orjson.loads(first.stdout)
    assert [i["reference"] for i in page["items"]] == creates[:3]
    rest = cli(
        database_url,
        "callbacks",
        "list",
        "--trigger",
        "CONTACT_CREATE",
        "--cursor",
        page["next_cursor"],
        "--format",
        "json",
    )
    assert [i["reference"] for i in orjson.loads(rest.stdout)["items"]] == [
        *creates[3:],
        answer["reference"],
    ]
    # The HTTP API takes the same cursor.
    http = client.get(
        "/callbacks", params={"trigger": "CONTACT_CREATE", "cursor": page["next_cursor"]}
    )
    assert [i["reference"] for i in http.json()["items"]] == [*creates[3:], answer["reference"]]

    # CSV: a cell a spreadsheet would run as a formula is written as text.
    csv_out = cli(
        database_url, "callbacks", "list", "--trigger", "CONTACT_CREATE", "--format", "csv"
    )
    assert csv_out.returncode == 0, csv_out.stderr
    rows = list(csv.DictReader(io.StringIO(csv_out.stdout)))
    assert len(rows) == len(creates) + 1
    assert rows[-1]["project_id"] == '\'=HYPERLINK("http://x")'
    assert rows[-1]["reference"] == answer["reference"]
    # The table (piped: tab-separated), with a note on stderr when more follow.
    table = cli(database_url, "callbacks", "list", "--limit", "2")
    assert table.returncode == 0, table.stderr
    assert len(table.stdout.splitlines()) == 3
    assert "more follow: --cursor " in table.stderr
    # Without a trigger: every kept one, interpreted ones too.
    every = orjson.loads(cli(database_url, "callbacks", "list", "--format", "json").stdout)
    assert {i["trigger"] for i in every["items"]} >= {
        "CONTACT_CREATE",
        "MESSAGE_DELIVERY",
        "OPT_OUT",
    }

    bad = cli(database_url, "callbacks", "list", "--since", "yesterday")
    assert bad.returncode == 2 and "--since" in bad.stderr
    bad = cli(database_url, "callbacks", "list", "--cursor", "nope")
    assert bad.returncode == 2 and "--cursor" in bad.stderr
    # Logged as an audit read, as GET /callbacks is.
    access = orjson.loads(cli(database_url, "audit", "access", "--format", "json").stdout)
    assert any(
        a["route"] == "callbacks list" and a.get("subject.trigger") == "CONTACT_CREATE"
        for a in access
    ), access


def test_the_console_page_lists_them_in_pages(client: TestClient, database_url: str) -> None:
    creates = list(sent(client, CREATES))
    hostile = p.envelope(
        project_id="<script>alert(1)</script>",
        contact_create_notification={"contact": {}},
    )
    last = post(client, p.encode(hostile)).json()["reference"]
    delivery = list(sent(client, OTHERS[1:2]))
    wait_for_projections(client)

    html = client.get("/console/callbacks", params={"trigger": "contact_create"}).text
    # Linked from the console's navigation, and current there.
    assert '<a href="/console/callbacks" aria-current="page">Callbacks</a>' in html
    shown = [unquote(r) for r in re.findall(r'href="/console/callbacks/([^"]+)"', html)]
    assert shown == [*creates, last]
    assert "kept as is" in html and "MESSAGE_DELIVERY" not in html.split("<tbody>")[1]
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html
    # Each links to its body (the audited page by reference).
    body = client.get(f"/console/callbacks/{quote(creates[0], safe='/')}")
    assert body.status_code == 200 and "contact_create_notification" in body.text

    # Pages of 50: with more kept, a "Next page" link goes on where the first page ended.
    many = [
        p.envelope(
            app_id=f"APP{i}",
            contact_create_notification={"contact": {}},
        )
        for i in range(callbacks_page.PAGE_ROWS)
    ]
    refs = [*creates, last]
    for body_ in many:
        refs.append(post(client, p.encode(body_)).json()["reference"])
    wait_for_projections(client)
    first = client.get("/console/callbacks", params={"trigger": "CONTACT_CREATE"}).text
    found = re.search(r'<a id="next" href="([^"]+)"', first)
    assert found is not None
    second = client.get(html_unescape(found.group(1))).text
    walked = [
        unquote(r)
        for text in (first, second)
        for r in re.findall(r'href="/console/callbacks/([^"]+)"', text)
    ]
    assert walked == refs
    assert 'id="next"' not in second
    # Without a trigger: the interpreted ones too; a window by arrival.
    every = client.get("/console/callbacks", params={"since": "2000-01-01T00:00:00Z"}).text
    assert delivery[0] in [
        unquote(r) for r in re.findall(r'href="/console/callbacks/([^"]+)"', every)
    ]
    # What the page cannot use is said, not a 500.
    odd = client.get("/console/callbacks", params={"trigger": "a b", "since": "x", "cursor": "y"})
    assert odd.status_code == 200
    assert odd.text.count('class="notice error"') == 3
    # Audit scope, as GET /callbacks.
    reader = make_key(database_url, "console-reader", ("read",))
    denied = client.get("/console/callbacks", headers={"Authorization": f"Bearer {reader}"})
    assert denied.status_code == 403


def test_the_list_holds_after_an_erasure_and_a_replay_gives_the_same(
    client: TestClient, settings: Settings, database_url: str
) -> None:
    """A row names its callback and what the body says of itself (app, event time), none of
    it personal: an erasure of the person the body is about leaves the row as it was, and a
    replay, which reads only the events' public parts, builds the same rows."""
    create = FIXTURES / "CONTACT_CREATE__sdk-java__1.json"  # about MMS 33987654321 first
    reference = next(iter(sent(client, [create, *OTHERS[1:2]])))
    wait_for_projections(client)
    every = {"callbacks": ("reference",)}
    live = projection_rows(database_url, views=every)
    [row] = [r for r in live["callbacks"] if r["reference"] == reference]
    assert (row["trigger"], row["app_id"], row["event_time"]) == (
        "CONTACT_CREATE",
        "app id value",
        "2020-11-17T16:05:45.000000Z",
    )
    erased = client.post(
        "/admin/erasures", json={"channel": "MMS", "identity": "33987654321", "reason": "test"}
    )
    assert erased.status_code == 201, erased.text
    assert client.get(f"/callbacks/{quote(reference, safe='/')}").json().get("erased") is True
    wait_for_projections(client)
    assert projection_rows(database_url, views=every) == live
    replay(settings)
    assert projection_rows(database_url, views=every) == live
