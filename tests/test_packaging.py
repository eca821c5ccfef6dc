"""The README's commands, compose.yaml and the packaging do what they say."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import httpx
import orjson
import yaml

from store.config import Settings, eventsourcing_env
from tests import payloads as p
from tests.helpers import names, printed_key, stored_events
from tests.postgres_server import free_port
from tests.server import Server

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def test_readme_names_the_two_commands_and_ci_runs_the_test_one() -> None:
    assert "\n    scripts/serve\n" in README
    assert "\n    scripts/test\n" in README
    assert (ROOT / "scripts/serve").stat().st_mode & 0o111
    assert re.search(r"^scripts/test$", (ROOT / ".ci/run").read_text(), re.M)


def test_distribution_installs_the_layers_as_packages_whose_import_path_is_their_folder() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = config["tool"]["setuptools"]["packages"]
    layers = {p for p in packages if "." not in p}
    assert layers == {"domain", "store", "projections", "service", "api", "callback_ledger"}
    # Sub-packages (api.console) live inside their layer.
    assert all(p.split(".")[0] in layers for p in packages)
    assert "package-dir" not in config["tool"]["setuptools"]  # no import hook: path == folder
    for package in packages:
        assert (ROOT / package.replace(".", "/") / "__init__.py").is_file()
    assert config["project"]["scripts"]["callback-ledger"] == "callback_ledger.cli:main"


def compose_ledger() -> dict:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert {"postgres", "ledger", "projector"} <= set(compose["services"])
    projector = compose["services"]["projector"]
    assert "exec callback-ledger project" in projector["command"][-1]
    assert (
        projector["environment"]["LEDGER_DATABASE_URL"]
        == compose["services"]["ledger"]["environment"]["LEDGER_DATABASE_URL"]
    )
    return compose["services"]["ledger"]


def compose_projector_args() -> list[str]:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return compose["services"]["projector"]["command"][-1].split("exec callback-ledger ")[1].split()


def test_compose_configures_the_service_against_its_postgres() -> None:
    ledger = compose_ledger()
    url = ledger["environment"]["LEDGER_DATABASE_URL"]
    env = eventsourcing_env(url)
    assert env["POSTGRES_HOST"] == "postgres"
    assert env["POSTGRES_DBNAME"] == "ledger"
    assert "postgres" in ledger["depends_on"]
    assert "SINCH_WEBHOOK_SECRET" in ledger["environment"]
    assert "callback-ledger serve --host 0.0.0.0 --port 8000" in ledger["command"][-1]
    # The secret is required (compose stops with the message when it is unset), and only the
    # public port (the webhook, the bare /healthz) is published; the private listener is not.
    assert ledger["environment"]["SINCH_WEBHOOK_SECRET"].startswith("${SINCH_WEBHOOK_SECRET:?")
    assert ledger["environment"]["LEDGER_PRIVATE_LISTEN"] == "0.0.0.0:8001"
    assert ledger["ports"] == ["8000:8000"]


def test_compose_command_and_configuration_run_here(tmp_path: Path, pg_admin_url: str) -> None:
    """The compose service's own command and environment, with only the database host swapped for
    the test's PostgreSQL."""
    from tests.conftest import create_database, drop_database

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


def test_readme_curl_example_posts_a_signed_seed_callback(tmp_path: Path) -> None:
    snippet = re.search(r"```bash\n(.*?)```", README, re.S)
    assert snippet, "README lost its curl example"
    database_url = f"sqlite:///{tmp_path}/ledger.sqlite3"
    server = Server(
        {"LEDGER_DATABASE_URL": database_url, "SINCH_WEBHOOK_SECRET": "change-me"},
        tmp_path / "server.log",
    )
    try:
        script = snippet.group(1).replace("http://127.0.0.1:8000", server.url)
        first = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True)
        again = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True)
    finally:
        server.stop()
    assert first.stdout == '{"status":"accepted","trigger":"MESSAGE_DELIVERY","events":1}', (
        first.stdout + first.stderr
    )
    assert '"status":"duplicate"' in again.stdout
    assert names(stored_events(database_url)) == ["Message.FirstReported"]


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
