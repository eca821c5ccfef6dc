"""A store is of format version 1 (store.format_version). A development build's store (no
version) or one of another version is refused by every command, exit 2 and one line naming the
way over; `export` writes a development build's callbacks with their receipts, and
`ingest --keep-arrival` records them into a new store, which answers as the old one did."""

from __future__ import annotations

import base64
import runpy
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from api.app import create_app
from service.runtime import Runtime
from service.settings import Settings, backend_for
from store import format_version
from store.backend import Database
from store.vault import Secrets
from tests.conftest import SECRET
from tests.helpers import cli, make_key
from tests.integration.test_queries import wait_for_projections

FIXTURES = Path(__file__).parents[1] / "fixtures"
STORE = FIXTURES / "store-760cdb6-encrypted.sqlite3"
MADE = runpy.run_path(str(FIXTURES / "store-760cdb6-encrypted.py"))
KEYS = Secrets(MADE["MASTER_KEY"], MADE["INDEX_KEY"])
KEYS_ENV = {
    "LEDGER_MASTER_KEY": base64.b64encode(KEYS.master).decode(),
    "LEDGER_INDEX_KEY": base64.b64encode(KEYS.index).decode(),
}
COMMANDS = (["serve", "--port", "0"], ["project", "--once"], ["replay"], ["verify"])


def refused_line(done: Any) -> str:
    """The one line a refused command wrote (exit 2)."""
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def carry_over_line(done: Any) -> str:
    """A development build's store refused: the line names the way over."""
    line = refused_line(done)
    assert "written by a development build" in line, line
    assert "callback-ledger export --out FILE" in line
    assert "callback-ledger ingest --keep-arrival FILE" in line
    return line


@pytest.fixture
def old_store(tmp_path: Path) -> str:
    shutil.copy(STORE, tmp_path / "old.sqlite3")
    return f"sqlite:///{tmp_path}/old.sqlite3"


def test_a_development_build_store_is_refused_by_every_command(old_store: str) -> None:
    path = Path(old_store.removeprefix("sqlite:///"))
    before = path.read_bytes()
    for command in COMMANDS:
        carry_over_line(cli(old_store, *command, **KEYS_ENV))
    assert path.read_bytes() == before  # refused before anything ran on it


def test_a_store_of_this_version_opens_and_another_version_is_refused(
    database_url: str,
) -> None:
    assert (
        cli(database_url, "ingest", str(FIXTURES / "seed_opt_out.json"), **KEYS_ENV).returncode == 0
    )
    assert cli(database_url, "verify", **KEYS_ENV).returncode == 0
    db = Database(backend_for(database_url))
    try:
        with db.read() as cur:
            row = cur.execute(f"SELECT version FROM {format_version.TABLE}").fetchone()
        assert row == {"version": 1}
        with db.transaction() as cur:
            cur.execute(f"UPDATE {format_version.TABLE} SET version = 2")
        line = refused_line(cli(database_url, "project", "--once", **KEYS_ENV))
        assert "format version 2, newer than this version's (1)" in line, line
        with db.transaction() as cur:  # as a development build's: events, and no version
            cur.execute(f"DROP TABLE {format_version.TABLE}")
        carry_over_line(cli(database_url, "verify", **KEYS_ENV))
    finally:
        db.close()


def answers(settings: Settings) -> dict[str, Any]:
    runtime = Runtime(settings)
    key = make_key(settings.database_url, "carried-over")
    try:
        with TestClient(
            create_app(settings, runtime.ledger()), headers={"Authorization": f"Bearer {key}"}
        ) as client:
            wait_for_projections(client)
            found: dict[str, Any] = MADE["answers"](client)
    finally:
        runtime.close()
    return without_times(found)


def without_times(found: dict[str, Any]) -> dict[str, Any]:
    """The answers but consent's "at", the time of asking."""
    consent = {q: {k: v for k, v in a.items() if k != "at"} for q, a in found["consent"].items()}
    return {**found, "consent": consent}


def test_export_and_ingest_carry_a_development_build_store_over(
    old_store: str, database_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "callbacks.jsonl"
    exported = cli(old_store, "export", "--out", str(out), **KEYS_ENV)
    assert exported.returncode == 0, exported.stderr
    records = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    # Every callback as received, with its receipt, in arrival order.
    sources = Path("/work/shared/fixtures/sinch-callbacks")
    assert len(records) == len(MADE["FILES"])
    for number, (name, record) in enumerate(zip(MADE["FILES"], records, strict=True)):
        receipt = MADE["receipt_of"](number, (sources / name).read_text())
        assert record == {
            "raw": receipt.raw,
            "received_at": receipt.received_at.isoformat(),
            "signature_verified": receipt.signature_verified,
            "headers": receipt.headers,
            "source": "webhook",
        }

    ingested = cli(database_url, "ingest", "--keep-arrival", str(out), **KEYS_ENV)
    assert ingested.returncode == 0, ingested.stderr
    assert ingested.stdout.count(": accepted ") == len(records), ingested.stdout

    settings = Settings(keys=KEYS, database_url=database_url, webhook_secrets=(SECRET,))
    found = answers(settings)
    assert found == without_times(
        MADE["ANSWERS"]
    )  # arrival times included: /callbacks lists received_at

    # The new store is of this version, and exports the same callbacks.
    again = tmp_path / "again.jsonl"
    assert cli(database_url, "export", "--out", str(again), **KEYS_ENV).returncode == 0
    assert again.read_bytes() == out.read_bytes()


def test_a_change_of_format_is_a_numbered_upgrade_run_once(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """How a later format would come: VERSION raised, and UPGRADES[1] taking a version 1
    store to 2, run at start, once."""
    assert (
        cli(database_url, "ingest", str(FIXTURES / "seed_opt_out.json"), **KEYS_ENV).returncode == 0
    )
    runs: list[int] = []

    def to_2(cur: Any) -> None:
        runs.append(1)
        cur.execute("CREATE TABLE upgraded_to_2 (id INTEGER)")

    monkeypatch.setattr(format_version, "VERSION", 2)
    monkeypatch.setattr(format_version, "UPGRADES", {1: to_2})
    db = Database(backend_for(database_url))
    try:
        format_version.check(db, "the store")
        format_version.check(db, "the store")
        assert runs == [1] and format_version.version(db) == 2
        with db.read() as cur:
            assert db.backend.tables_present(cur, ["upgraded_to_2"])
    finally:
        db.close()
