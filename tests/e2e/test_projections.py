"""Projections on SQLite and PostgreSQL: the rows, their order-independence, replay, and
exactly-once following."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from service.runtime import Runtime
from service.settings import Settings
from store.ledger import Ledger
from tests.helpers import accept_all, cli, projection_rows
from tests.integration.test_projections import SCENARIO, catch_up


@pytest.fixture
def runtime(settings: Settings, ledger: Ledger) -> Iterator[Runtime]:
    rt = Runtime(settings, ledger)
    yield rt
    rt.close()


# ---- order independence, generated -----------------------------------------------------------


def test_replay_command_reports_what_it_did(
    runtime: Runtime, ledger: Ledger, database_url: str
) -> None:
    accept_all(ledger, SCENARIO)
    catch_up(runtime)
    live = projection_rows(database_url)
    done = cli(database_url, "replay", "--projection", "consent", timeout=120)
    assert done.returncode == 0, done.stderr
    assert "consent: rebuilt generation 2 from" in done.stderr
    assert "views switched" in done.stderr
    assert projection_rows(database_url) == live
