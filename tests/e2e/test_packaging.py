"""The README's commands, compose.yaml and the packaging do what they say."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import yaml

from service.settings import Settings
from tests import payloads as p
from tests.e2e.test_readme_tour import matches
from tests.helpers import printed_key
from tests.postgres_server import free_port
from tests.server import Server
from tests.unit.test_packaging import README, ROOT, compose_ledger


def compose_projector_args() -> list[str]:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return compose["services"]["projector"]["command"][-1].split("exec callback-ledger ")[1].split()


def test_compose_command_and_configuration_run_here(tmp_path: Path, pg_admin_url: str) -> None:
    """The compose service's own command and environment, with only the database host swapped for
    the test's PostgreSQL."""
    from tests.postgres_server import create_database, drop_database

    ledger = compose_ledger()
    database_url = create_database(pg_admin_url)
    try:
        compose_url = ledger["environment"]["LEDGER_DATABASE_URL"]
        assert Settings.from_env({"LEDGER_DATABASE_URL": compose_url}).backend == "postgresql"
        serve_args = ledger["command"][-1].split("exec callback-ledger ")[1].split()
        assert serve_args[0] == "serve"
        env = {
            **ledger["environment"],
            "LEDGER_DATABASE_URL": database_url,
            "SINCH_WEBHOOK_SECRET": "s3",
            # compose keeps the private listener inside its network; here on a free port.
            "LEDGER_PRIVATE_LISTEN": f"127.0.0.1:{(private_port := free_port())}",
        }
        server = Server(env, tmp_path / "server.log")
        try:
            private = f"http://127.0.0.1:{private_port}"
            health = httpx.get(private + "/healthz", headers=server.headers).json()
            assert (health["backend"], health["follower"]) == ("postgresql", "off")
            raw = p.encode(p.delivery())
            response = httpx.post(
                server.url + "/webhooks/sinch", content=raw, headers=p.signed_headers(raw, "s3")
            )
            assert response.json()["status"] == "accepted"
            assert (
                httpx.get(private + "/healthz", headers=server.headers).json()["projections"][
                    "messages"
                ]["lag"]
                > 0
            )
            subprocess.run(
                [sys.executable, "-m", "callback_ledger.cli", *compose_projector_args(), "--once"],
                env={**os.environ, "LEDGER_DATABASE_URL": database_url},
                check=True,
                timeout=60,
            )
            # Only on the private listener; the public port has the webhook and bare /healthz.
            assert (
                httpx.get(server.url + "/messages/MSG1", headers=server.headers).status_code == 404
            )
            assert (
                httpx.get(private + "/messages/MSG1", headers=server.headers).json()["status"]
                == "DELIVERED"
            )
        finally:
            server.stop()
    finally:
        drop_database(pg_admin_url, database_url)


def test_readme_serve_command_runs_the_service(tmp_path: Path) -> None:
    """The README's first command, then its first query with the key the log printed."""
    port = free_port()
    env = {**os.environ, "LEDGER_DATABASE_URL": f"sqlite:///{tmp_path}/ledger.sqlite3"}
    env.pop("SINCH_WEBHOOK_SECRET", None)
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(ROOT / "scripts/serve"), "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 180  # the first run may install the project
        while True:
            assert process.poll() is None, log.read_text()
            try:
                bare = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "scripts/serve did not come up"
                time.sleep(0.5)
        assert bare.json() == {"status": "ok"}
        key = printed_key(log.read_text())
        assert key, log.read_text()
        # Its log is a file, so JSON lines: the README shows the key's line in that form.
        shown = re.search(r"<!-- admin-key:json -->\n```json\n(.*?)```", README, re.S)
        assert shown, "README lost the admin key's JSON line"
        lines = [orjson.loads(line) for line in log.read_text().splitlines() if '"api_key"' in line]
        assert len(lines) == 1 and matches(json.loads(shown.group(1)), lines[0]), lines
        query = re.search(r"\n    (curl .*/messages)\n", README)
        assert query, "README lost its first query"
        script = f"KEY={key}\n" + query.group(1).replace(
            "http://127.0.0.1:8000", f"http://127.0.0.1:{port}"
        )
        answer = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
        assert orjson.loads(answer.stdout) == {"items": [], "next_cursor": None}, answer
        health = httpx.get(
            f"http://127.0.0.1:{port}/healthz", headers={"Authorization": f"Bearer {key}"}
        ).json()
        assert health["backend"] == "sqlite" and health["follower"] == "inline"
    finally:
        process.terminate()
        process.wait(timeout=30)
