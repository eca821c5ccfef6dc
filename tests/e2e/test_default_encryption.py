"""The default store, started as the README's first command starts it (no keys configured, the
default database path), is encrypted from its first byte whatever command runs first: a number
and a text received are in no file of the store's folder, neither as stored nor decompressed
with the shipped dictionaries, and the key file is made beside the store, owner-only. A key
file named by LEDGER_KEY_FILE (compose.yaml's) is made the same way on a store's first start."""

from __future__ import annotations

import os
import secrets
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path, PurePosixPath
from typing import Any

import httpx
import pytest
import yaml
import zstandard

from service.settings import Settings, backend_for, open_ledger
from store import envelope
from store.backend import Database
from store.compression import DICTIONARIES, MAGIC, StateCompressor
from store.vault import SecretsError
from tests import payloads as p
from tests.helpers import accept_all
from tests.postgres_server import free_port

ROOT = Path(__file__).parents[2]
COMMAND = Path(sys.executable).parent / "callback-ledger"
STORE = "callback-ledger.sqlite3"


def keyless_env(**extra: str) -> dict[str, str]:
    """The environment a new user has (tests/conftest.py sets keys for every other test), with
    `extra`."""
    unset = ("LEDGER_MASTER_KEY", "LEDGER_INDEX_KEY", "LEDGER_KEY_FILE", "LEDGER_DATABASE_URL")
    kept = {k: v for k, v in os.environ.items() if k not in unset and k != "SINCH_WEBHOOK_SECRET"}
    return {**kept, **extra}


def run(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(COMMAND), *args],
        cwd=folder,
        env=keyless_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def stop(process: subprocess.Popen[Any]) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def serve_and_post(folder: Path, log: Path, body: dict[str, Any], **env: str) -> None:
    """`callback-ledger serve` in `folder` (its default store unless `env` names one), one
    callback accepted, stopped."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [str(COMMAND), "serve", "--port", str(port)],
            cwd=folder,
            env=keyless_env(**env),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(url + "/healthz", timeout=10).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        answer = httpx.post(url + "/webhooks/sinch", content=p.encode(body), timeout=30)
        assert answer.status_code == 200 and answer.json()["status"] == "accepted", answer.text
    finally:
        code = stop(process)
    assert code in (0, -signal.SIGTERM), log.read_text()


def decompressed(data: bytes) -> list[bytes]:
    """Every zstd frame in `data` (it may start anywhere: a page of the file or of its log),
    decompressed with each shipped dictionary, as anyone holding the package can."""
    dictionaries = [
        zstandard.ZstdCompressionDict(path.read_bytes())
        for path in sorted(DICTIONARIES.glob("*.zdict"))
    ]
    out: list[bytes] = []
    start = data.find(MAGIC)
    while start >= 0:
        for dictionary in dictionaries:
            try:
                stream = zstandard.ZstdDecompressor(dict_data=dictionary).decompressobj()
                out.append(stream.decompress(data[start : start + (1 << 20)]))
                break
            except zstandard.ZstdError:
                continue
        start = data.find(MAGIC, start + 1)
    return out


def stored_values(database_url: str) -> list[bytes]:
    """Every value in every table of the store, and what a reader without its keys gets from
    each: the public part of an encrypted event state, or a decompressed one."""
    zstd = StateCompressor()
    db = Database(backend_for(database_url))
    values: list[bytes] = []
    try:
        with db.read() as cur:
            if db.backend.name == "sqlite":
                sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
            else:
                sql = "SELECT tablename AS name FROM pg_tables WHERE schemaname = current_schema()"
            for table in [r["name"] for r in cur.execute(sql).fetchall()]:
                for row in cur.execute(f'SELECT * FROM "{table}"').fetchall():
                    for value in row.values():
                        if isinstance(value, str):
                            values.append(value.encode())
                        elif isinstance(value, bytes | memoryview):
                            value = bytes(value)
                            values.append(value)
                            if envelope.is_sealed(value):
                                values.append(envelope.public_json(value, zstd))
                            elif value[:4] == MAGIC:
                                values.append(zstd.decompress(value))
    finally:
        db.close()
    return values


def found_in_store(database_url: str, needles: list[str], folder: Path | None = None) -> list[str]:
    """Where a reader without the store's keys finds each needle: in its values, and in every
    file of `folder` (the SQLite store's, with its log and the key file)."""
    found: list[str] = []
    for path in [f for f in folder.rglob("*") if f.is_file()] if folder else []:
        data = path.read_bytes()
        for chunk in [data, *decompressed(data)]:
            found += [f"{n} in {path.name}" for n in needles if n.encode() in chunk]
    for value in stored_values(database_url):
        found += [f"{n} in a stored value" for n in needles if n.encode() in value]
    return found


def assert_key_file(key_file: Path) -> None:
    assert key_file.is_file(), sorted(f.name for f in key_file.parent.iterdir())
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    text = key_file.read_text()
    assert "LEDGER_MASTER_KEY=" in text and "LEDGER_INDEX_KEY=" in text


def personal() -> tuple[str, str]:
    """A number and a text no other test sends."""
    number = "+4670" + "".join(secrets.choice("0123456789") for _ in range(7))
    return number, f"meet me at {secrets.token_hex(8)}"


@pytest.mark.parametrize(
    "first",
    [
        (),
        ("keys", "create", "--name", "reader", "--scope", "read"),
        ("keys", "list"),
        ("quarantine",),
    ],
    ids=["serve", "keys-create", "keys-list", "quarantine"],
)
def test_a_new_default_store_holds_no_number_and_no_text_in_any_file(
    tmp_path: Path, first: tuple[str, ...]
) -> None:
    folder = tmp_path / "store"
    folder.mkdir()
    if first:
        done = run(folder, *first)
        assert done.returncode == 0, done.stderr
    number, text = personal()
    log = tmp_path / "serve.log"
    serve_and_post(folder, log, p.inbound(message_id="NEW1", text=text, identity=number))
    assert "stored unencrypted" not in log.read_text()
    assert_key_file(folder / f"{STORE}.keys")
    needles = [number, number.lstrip("+"), text]
    assert found_in_store(f"sqlite:///{folder / STORE}", needles, folder) == []
    # The store opens again with the key file made.
    shown = run(folder, "verify")
    assert shown.returncode == 0, shown.stderr


def test_a_store_written_without_keys_is_never_given_a_key_file(tmp_path: Path) -> None:
    """A store that holds events written without encryption stays as it was written: a key
    file made now would not open them (`callback-ledger migrate` copies such a store)."""
    folder = tmp_path / "store"
    folder.mkdir()
    url = f"sqlite:///{folder / STORE}"
    # As an earlier version wrote it with no keys: events in plaintext, no key file.
    number, text = personal()
    ledger = open_ledger(Settings(database_url=url))
    try:
        accept_all(ledger, [p.inbound(text=text, identity=number)])
    finally:
        ledger.close()
    serve_and_post(folder, tmp_path / "serve.log", p.inbound(message_id="NEW2"))
    assert not (folder / f"{STORE}.keys").exists()
    assert "stored unencrypted" in (tmp_path / "serve.log").read_text()
    # What the test above looks for is found where it is stored in plaintext.
    assert found_in_store(url, [text], folder), "the search finds nothing even in plaintext"


def test_a_named_key_file_is_made_on_a_new_stores_first_start(
    database_url: str, tmp_path: Path
) -> None:
    """As compose.yaml runs it: LEDGER_KEY_FILE names a file, on a volume of its own, that does
    not exist yet; the web process and the projection worker start at once and both use the
    file one of them made."""
    key_file = tmp_path / "keys" / "ledger.keys"
    key_file.parent.mkdir()
    env = {"LEDGER_DATABASE_URL": database_url, "LEDGER_KEY_FILE": str(key_file)}
    log = tmp_path / "project.log"
    with log.open("ab") as out:
        worker = subprocess.Popen(
            [str(COMMAND), "project", "--interval", "0.2"],
            cwd=tmp_path,
            env=keyless_env(**env),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    number, text = personal()
    try:
        body = p.inbound(message_id="NEW3", text=text, identity=number)
        serve_and_post(tmp_path, tmp_path / "serve.log", body, LEDGER_PROJECTIONS="off", **env)
        deadline = time.monotonic() + 30
        while not projected(database_url):
            assert worker.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
    finally:
        stop(worker)
    assert_key_file(key_file)
    assert found_in_store(database_url, [number, number.lstrip("+"), text]) == []
    ledger = open_ledger(Settings(key_file=str(key_file), database_url=database_url))
    try:
        assert ledger.vault.encrypted
    finally:
        ledger.close()


def projected(database_url: str) -> bool:
    db = Database(backend_for(database_url))
    try:
        with db.read() as cur:
            if not db.backend.tables_present(cur, ["ledger_projections"]):
                return False
            row = cur.execute("SELECT min(position) AS n FROM ledger_projections").fetchone()
            return bool(row and row["n"])
    finally:
        db.close()


def test_a_named_key_file_missing_for_a_store_that_holds_events_is_an_error(
    database_url: str, tmp_path: Path
) -> None:
    ledger = open_ledger(Settings(database_url=database_url))
    try:
        accept_all(ledger, [p.inbound()])
    finally:
        ledger.close()
    key_file = tmp_path / "ledger.keys"
    settings = Settings.from_env(
        {"LEDGER_DATABASE_URL": database_url, "LEDGER_KEY_FILE": str(key_file)}
    )
    with pytest.raises(SecretsError, match="LEDGER_KEY_FILE"):
        settings.secrets()
    assert not key_file.exists()


def test_compose_keeps_the_key_file_on_a_volume_of_its_own() -> None:
    """compose.yaml gives the web process and the worker the same key file (made on the first
    start, as above), on a named volume that is not the database's."""
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    paths = {services[name]["environment"]["LEDGER_KEY_FILE"] for name in ("ledger", "projector")}
    assert len(paths) == 1, paths
    folder = str(PurePosixPath(paths.pop()).parent)
    database_volumes = {m.split(":")[0] for m in services["postgres"]["volumes"]}
    for name in ("ledger", "projector"):
        mounts = {m.split(":")[1]: m.split(":")[0] for m in services[name]["volumes"]}
        volume = mounts[folder]
        assert volume in compose["volumes"], (name, volume)
        assert volume not in database_volumes, (name, volume)
