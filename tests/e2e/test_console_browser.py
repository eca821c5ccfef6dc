"""The console in a real browser: headless Chromium (tests/browser.py) against a real `serve`
on SQLite and PostgreSQL. Signs in by pasting a key, searches a phone number typed in another
format than stored, checks the consent answer, opens a message and checks its timeline order and
the out-of-order arrival, resolves two quarantined bodies (re-ingests one this version accepts,
marks the other reviewed), downloads the compliance CSV, signs out, and sees a revoked key's
session refused. With LEDGER_SCREENSHOTS=<dir> it saves a PNG of each main page there
(scripts/screenshots writes docs/)."""

from __future__ import annotations

import base64
import csv
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from access.api_keys import KeyStore
from service.settings import Settings, backend_for, open_ledger
from store.backend import Database
from tests import console_data as data
from tests import payloads as p
from tests.browser import start_chromium
from tests.conftest import SECRET
from tests.helpers import KEYS, make_key
from tests.server import Server

SHOTS = os.environ.get("LEDGER_SCREENSHOTS")


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[Server]:
    ledger = open_ledger(Settings(keys=KEYS, database_url=database_url))
    try:
        data.quarantine_acceptable(ledger)  # kept by "an earlier version"
    finally:
        ledger.close()
    env = {"LEDGER_DATABASE_URL": database_url, "SINCH_WEBHOOK_SECRET": SECRET}
    started = Server(env, tmp_path / "serve.log")
    yield started
    started.stop()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    driver = start_chromium(tmp_path / "profile", tmp_path / "downloads")
    yield driver
    driver.quit()


def post(server: Server, raw: bytes) -> int:
    answer = httpx.post(
        server.url + "/webhooks/sinch", content=raw, headers=p.signed_headers(raw, SECRET)
    )
    return answer.status_code


def settle(server: Server, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        health = httpx.get(server.url + "/healthz", headers=server.headers).json()
        if all(p["lag"] == 0 for p in health["projections"].values()):
            return
        assert time.monotonic() < deadline, health
        time.sleep(0.1)


def shot(driver: Any, name: str) -> None:
    if not SHOTS:
        return
    # The whole page (up to a limit), not only the window: as tall as its content.
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 960, "height": 700, "deviceScaleFactor": 1, "mobile": False},
    )
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 960, "height": min(height, 1200), "deviceScaleFactor": 1, "mobile": False},
    )
    png = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})["data"]
    (Path(SHOTS) / f"console-{name}.png").write_bytes(base64.b64decode(png))
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def css(driver: Any, selector: str) -> Any:
    """The element, waiting for it: a click that loads a page returns before the page is in."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, 15).until(
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, selector))
    )


def arrive(driver: Any, part: str) -> None:
    """Waits until the browser is on a URL holding `part`."""
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 15).until(expected_conditions.url_contains(part))


def css_all(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def link(driver: Any, text: str) -> Any:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, 15).until(
        expected_conditions.element_to_be_clickable((By.PARTIAL_LINK_TEXT, text))
    )


def sign_in(driver: Any, server: Server, key: str) -> None:
    from selenium.webdriver.common.keys import Keys

    driver.get(server.url + "/console/search")
    assert "/console/sign-in" in driver.current_url  # sent to the form first
    field = css(driver, "#key")
    assert css(driver, "label[for=key]").text == "API key"
    field.send_keys(key)
    field.send_keys(Keys.ENTER)  # the keyboard alone signs in
    css(driver, "#q")
    assert driver.current_url.endswith("/console/search"), driver.page_source[:500]


def fits_a_phone(driver: Any) -> bool:
    driver.set_window_size(390, 844)
    try:
        return bool(
            driver.execute_script(
                "return document.documentElement.scrollWidth <= window.innerWidth + 1"
            )
        )
    finally:
        driver.set_window_size(1280, 900)


def test_console_in_a_real_browser(server: Server, browser: Any, tmp_path: Path) -> None:
    assert post(server, data.REFUSED) == 400  # quarantined
    for body in data.story():
        assert post(server, p.encode(body)) == 200
    settle(server)
    driver = browser
    sign_in(driver, server, server.key)
    assert "admin" in css(driver, ".who").text

    # Search a phone number typed in another format than stored.
    box = css(driver, "#q")
    box.send_keys(data.NUMBER_AS_TYPED)
    box.submit()
    arrive(driver, "?q=")
    shot(driver, "search")
    assert fits_a_phone(driver)
    link(driver, data.NUMBER).click()
    arrive(driver, "/console/numbers/")

    # The number: consent now, the violation with its proof, consent at a time.
    states = [e.text for e in css_all(driver, "#consent .consent-state")]
    assert "OPTED_OUT" in states
    assert "MSG-1" in css(driver, "#violations").text
    from selenium.webdriver.support.ui import Select

    Select(css(driver, "#at-channel")).select_by_visible_text("WHATSAPP")
    css(driver, "#at").send_keys("2024-06-15T09:30:00Z")
    css(driver, "#at").submit()
    arrive(driver, "at=")
    assert "OPTED_OUT" in css(driver, "#at-answer").text
    shot(driver, "number")
    assert fits_a_phone(driver)

    # The message: timeline in event-time order, arrival beside it, the late one visible.
    link(driver, "MSG-1").click()
    arrive(driver, "/console/messages/")
    assert css(driver, "#status").text == "READ"
    times = [e.text for e in css_all(driver, "#timeline .event-time")]
    assert times == sorted(times) and len(times) == 3
    assert [e.text for e in css_all(driver, "#timeline .status")] == [
        "QUEUED_ON_CHANNEL",
        "DELIVERED",
        "READ",
    ]
    arrived = [e.text for e in css_all(driver, "#timeline .arrived")]
    assert all(arrived) and arrived[1] < arrived[0]  # DELIVERED reached us first
    flagged = css_all(driver, "#timeline tr.out-of-order")
    assert len(flagged) == 1 and "DELIVERED" in flagged[0].text
    assert "out of order" in css(driver, "#flags").text
    shot(driver, "message")
    assert fits_a_phone(driver)  # wide tables scroll inside their box, not the page

    # The hostile metadata of the other message is text, not markup.
    driver.get(server.url + "/console/messages/MSG-2")
    assert css(driver, "#metadata").text == data.HOSTILE

    # Overview charts for the day of the story.
    driver.get(f"{server.url}/console/overview?since={data.SINCE}&until={data.UNTIL}&channel=")
    assert css(driver, "#total").text == "2"
    assert len(css_all(driver, "#funnel rect")) == 4
    shot(driver, "overview")

    # Quarantine: re-ingest the body this version accepts; mark the other reviewed.
    driver.get(server.url + "/console/quarantine")
    entries = [e.get_attribute("href") for e in css_all(driver, "#quarantine td:first-child a")]
    assert len(entries) == 2
    resolved = set()
    for href in entries:
        driver.get(href)
        if "MSG-3" in css(driver, "#body").text:
            css(driver, "#action-reingest").click()
            css(driver, "#resolve-submit").click()
            assert "reingested" in css(driver, "#resolution").text
            resolved.add("reingested")
        else:
            css(driver, "#action-review").click()
            css(driver, "#note").send_keys("probe from a scanner; nothing to recover")
            css(driver, "#resolve-submit").click()
            assert "reviewed" in css(driver, "#resolution").text
            resolved.add("reviewed")
    assert resolved == {"reingested", "reviewed"}
    driver.get(server.url + "/console/quarantine")
    assert len(css_all(driver, "#quarantine .resolved")) == 2
    shot(driver, "quarantine")
    settle(server)
    driver.get(server.url + "/console/search?q=MSG-3")
    assert "DELIVERED" in css(driver, "table.messages").text

    # Health.
    driver.get(server.url + "/console/health")
    assert css(driver, "#health-status").text == "ok"
    assert "messages" in css(driver, "#projections").text
    shot(driver, "health")

    # The compliance report, then its CSV downloaded by the browser.
    driver.get(f"{server.url}/console/compliance?since={data.SINCE}")
    assert css(driver, "#count").text == "1"
    shot(driver, "compliance")
    css(driver, "#csv").click()
    downloaded = tmp_path / "downloads" / "violations.csv"
    deadline = time.monotonic() + 20
    while not downloaded.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    rows = list(csv.DictReader(downloaded.open(newline="")))
    assert [(r["message_id"], r["identity"]) for r in rows] == [("MSG-1", data.NUMBER)]

    # Sign out: the console asks for a key again.
    css(driver, "#sign-out").click()
    arrive(driver, "/console/sign-in")
    driver.get(server.url + "/console/search")
    assert "/console/sign-in" in driver.current_url

    # A revoked key's session is refused at once.
    url = server.env["LEDGER_DATABASE_URL"]
    key = make_key(url, "soon-revoked", ("read",))
    sign_in(driver, server, key)
    db = Database(backend_for(url))
    try:
        assert KeyStore(db).revoke("soon-revoked")
    finally:
        db.close()
    driver.get(server.url + "/console/search")
    assert "revoked" in css(driver, "main").text
    assert "/console/sign-in" not in driver.current_url


def test_no_browser_fails_under_ci_and_skips_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests import browser as chromium

    monkeypatch.setattr(chromium, "CHROMIUM", str(tmp_path / "no-chromium"))
    monkeypatch.delenv("LEDGER_REQUIRE_BROWSER", raising=False)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="a browser is required here"):
        chromium.start_chromium(tmp_path / "p", tmp_path / "d")
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception):
        chromium.start_chromium(tmp_path / "p", tmp_path / "d")
    monkeypatch.setenv("LEDGER_REQUIRE_BROWSER", "1")
    with pytest.raises(pytest.fail.Exception):
        chromium.start_chromium(tmp_path / "p", tmp_path / "d")


def test_callbacks_page_in_a_real_browser(server: Server, browser: Any) -> None:
    """The stored callbacks page: reached from the navigation, filtered by a trigger typed in
    the form, each row opening its raw body."""
    from selenium.webdriver.common.keys import Keys

    from tests.unit.test_real_callbacks import FIXTURES

    creates = sorted(FIXTURES.glob("CONTACT_CREATE__*.json"))
    assert creates
    for path in [*creates, FIXTURES / "MESSAGE_DELIVERY__docs__1.json"]:
        assert post(server, path.read_bytes()) == 200
    settle(server)
    driver = browser
    sign_in(driver, server, server.key)
    link(driver, "Callbacks").click()
    arrive(driver, "/console/callbacks")
    field = css(driver, "#trigger")
    field.send_keys("contact_create")
    field.send_keys(Keys.ENTER)
    arrive(driver, "trigger=")
    css(driver, "#callbacks")
    rows = css_all(driver, "#callbacks tbody tr")
    assert len(rows) == len(creates), driver.page_source[:2000]
    assert {r.find_elements("css selector", "td")[1].text for r in rows} == {"CONTACT_CREATE"}
    assert fits_a_phone(driver)
    shot(driver, "callbacks")
    rows[0].find_element("css selector", "td:last-child a").click()
    arrive(driver, "/console/callbacks/")
    assert "contact_create_notification" in css(driver, "main").text
