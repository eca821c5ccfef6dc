"""GET /metrics: counters move with the webhook's answers, lag is read from the store, and
`serve --workers 2` sums its processes."""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import orjson
import pytest
from starlette.testclient import TestClient

from api.app import create_app
from service.settings import Settings
from store.ledger import Ledger
from tests import payloads as p
from tests.conftest import SECRET
from tests.helpers import cli
from tests.integration.test_metrics import scrape, signed, value
from tests.server import Server


def test_a_stopped_projection_is_reported_behind_with_its_age(
    settings: Settings, ledger: Ledger, database_url: str, admin_key: str
) -> None:
    off = dataclasses.replace(settings, projections="off")
    bearer = {"Authorization": f"Bearer {admin_key}"}
    with TestClient(create_app(off, ledger), headers=bearer) as client:
        assert (
            scrape(client)["callback_ledger_projection_lag_events", (("projection", "messages"),)]
            == 0
        )
        for body in (p.delivery("M1", "QUEUED_ON_CHANNEL"), p.opt("OPT_OUT")):
            assert signed(client, p.encode(body)).status_code == 200
        time.sleep(0.05)
        behind = scrape(client)
        head = value(behind, "callback_ledger_log_head")
        assert head >= 2
        for name in ("messages", "consent"):
            assert value(behind, "callback_ledger_projection_lag_events", projection=name) == head
            age = value(behind, "callback_ledger_projection_lag_seconds", projection=name)
            assert 0.05 <= age < 60
            assert value(behind, "callback_ledger_projection_stuck", projection=name) == 0
        time.sleep(0.2)
        older = scrape(client)
        assert value(older, "callback_ledger_projection_lag_seconds", projection="messages") > age

        # A worker catches up: the same scrape now says so.
        assert cli(database_url, "project", "--once").returncode == 0
        caught_up = scrape(client)
        for name in ("messages", "consent"):
            assert value(caught_up, "callback_ledger_projection_lag_events", projection=name) == 0
            assert value(caught_up, "callback_ledger_projection_lag_seconds", projection=name) == 0


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


@pytest.mark.parametrize("backend", ["postgres"])  # several processes need PostgreSQL
def test_several_workers_are_summed(database_url: str, tmp_path: Path) -> None:
    parent = tmp_path / "metrics"
    server = Server(
        {
            "LEDGER_DATABASE_URL": database_url,
            "SINCH_WEBHOOK_SECRET": SECRET,
            "LEDGER_LOG_FORMAT": "json",
            "PROMETHEUS_MULTIPROC_DIR": str(parent),
        },
        tmp_path / "server.log",
        ("--workers", "2", "--log-level", "info"),
    )
    try:
        deadline = time.monotonic() + 20
        while len(children(server.process.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(children(server.process.pid)) >= 2
        [run_dir] = list(parent.iterdir())  # a fresh directory inside the one given

        def post(n: int) -> int:
            raw = p.encode(p.delivery(f"W{n}", "DELIVERED"))
            # A new connection each: each may be accepted by either process.
            response = httpx.post(
                server.url + "/webhooks/sinch",
                content=raw,
                headers=p.signed_headers(raw, SECRET),
                timeout=30,
            )
            assert response.json()["status"] == "accepted"
            return n

        posted = 0
        pids: set[int] = set()
        with ThreadPoolExecutor(8) as pool:
            while posted < 400 and (posted < 40 or len(pids) < 2):
                list(pool.map(post, range(posted, posted + 20)))
                posted += 20
                pids = {
                    line["pid"]
                    for line in map(orjson.loads, server.log().splitlines())
                    if line.get("outcome") == "accepted"
                }
        assert len(pids) == 2, "one process took every callback"
        for _ in range(4):  # whichever process answers the scrape
            found = scrape(server.url, server.headers)
            assert (
                value(
                    found,
                    "callback_ledger_callbacks_total",
                    trigger="MESSAGE_DELIVERY",
                    outcome="accepted",
                )
                == posted
            )
            assert value(found, "callback_ledger_batch_size_sum") == posted
        assert len(list(run_dir.iterdir())) >= 2  # a file per process at least
    finally:
        server.stop()
    assert not run_dir.exists()  # removed when serve exits


def test_the_command_imports_prometheus_client_only_once_serve_has_set_it_up() -> None:
    # The library reads PROMETHEUS_MULTIPROC_DIR once, at import: `serve` must set it first.
    import subprocess
    import sys

    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, callback_ledger.cli; print('prometheus_client' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "False"


@pytest.mark.parametrize("backend", ["sqlite"])
def test_one_process_given_a_metrics_directory_starts_it_fresh(
    database_url: str, tmp_path: Path
) -> None:
    parent = tmp_path / "metrics"
    parent.mkdir()
    # A file left by an earlier run in the directory given: never summed in.
    (parent / "counter_1.db").write_bytes(b"\0" * 16)
    server = Server(
        {
            "LEDGER_DATABASE_URL": database_url,
            "SINCH_WEBHOOK_SECRET": SECRET,
            "PROMETHEUS_MULTIPROC_DIR": str(parent),
        },
        tmp_path / "server.log",
    )
    try:
        raw = p.encode(p.delivery("ONE"))
        httpx.post(
            server.url + "/webhooks/sinch",
            content=raw,
            headers=p.signed_headers(raw, SECRET),
            timeout=30,
        ).raise_for_status()
        found = scrape(server.url, server.headers)
        accepted = {"trigger": "MESSAGE_DELIVERY", "outcome": "accepted"}
        assert value(found, "callback_ledger_callbacks_total", **accepted) == 1
        assert value(found, "callback_ledger_store_up") == 1
        assert len(list(parent.iterdir())) == 2  # the old file and this run's directory
    finally:
        server.stop()
    assert [path.name for path in parent.iterdir()] == ["counter_1.db"]
