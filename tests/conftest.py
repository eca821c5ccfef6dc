"""Fixtures: every store-touching test runs against SQLite and a real PostgreSQL, each test on
a database of its own."""

from __future__ import annotations

import base64
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from api.app import create_app
from service.runtime import Runtime
from service.settings import Settings
from store.ledger import Ledger
from tests.helpers import KEYS, make_key
from tests.postgres_server import (
    Databases,
    PrivateServer,
    create_database,
    find_or_start,
)

SECRET = "test-secret-0123456789"

# The servers and commands the tests start read their keys from the environment.
os.environ["LEDGER_MASTER_KEY"] = base64.b64encode(KEYS.master).decode()
os.environ["LEDGER_INDEX_KEY"] = base64.b64encode(KEYS.index).decode()


def postgres_required() -> bool:
    return os.environ.get("CI") == "true" or os.environ.get("LEDGER_REQUIRE_POSTGRES") == "1"


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    try:
        url, server = find_or_start()
    except Exception as exc:
        message = f"no PostgreSQL could be found or started: {exc}"
        if postgres_required():
            pytest.fail(message + " (PostgreSQL is required here: CI or LEDGER_REQUIRE_POSTGRES)")
        pytest.skip(message)
    yield url
    if server is not None:
        server.destroy()


@pytest.fixture(scope="session")
def pg_databases(pg_admin_url: str) -> Iterator[Databases]:
    databases = Databases(pg_admin_url)
    yield databases
    databases.close()


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(
    backend: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[str]:
    yield from fresh_database(backend, tmp_path_factory, request)


def fresh_database(
    backend: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A URL of an empty database of its own on `backend`, dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('sqlite')}/ledger.sqlite3"
        return
    databases: Databases = request.getfixturevalue("pg_databases")
    url = databases.take()
    yield url
    databases.give_back(url)


@pytest.fixture
def copy_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """`copy_store(url)`: the URL of a new store holding what the store at `url` holds (closed:
    nothing may be connected to it), gone after the test. For a story recorded once, which
    tests each change a copy of."""
    copies: list[str] = []
    made: list[tuple[Databases, str]] = []

    def copy(url: str) -> str:
        copies.append(url)
        if not url.startswith("postgresql"):
            target = tmp_path / f"copy{len(copies)}.sqlite3"
            source = sqlite3.connect(url.removeprefix("sqlite:///"))
            copied = sqlite3.connect(target)
            with closing(source), closing(copied):
                source.backup(copied)
            return f"sqlite:///{target}"
        databases: Databases = request.getfixturevalue("pg_databases")
        made.append((databases, create_database(databases.admin_url, like=url)))
        return made[-1][1]

    yield copy
    for databases, url in made:
        databases.give_back(url)


def settings_for(database_url: str) -> Settings:
    return Settings(keys=KEYS, database_url=database_url, webhook_secrets=(SECRET,), db_timeout_s=3)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return settings_for(database_url)


@pytest.fixture
def ledger(settings: Settings) -> Iterator[Ledger]:
    runtime = Runtime(settings)
    yield runtime.ledger()
    runtime.close()


@pytest.fixture
def admin_key(settings: Settings) -> str:
    """A key with every scope: what the `client` fixture sends by default."""
    return make_key(settings.database_url, "test-admin")


def app_client(settings: Settings, ledger: Ledger, key: str) -> TestClient:
    """The app, sending `key` with every request; started in a `with`."""
    return TestClient(
        create_app(settings, ledger),
        raise_server_exceptions=False,
        headers={"Authorization": f"Bearer {key}"},
    )


@pytest.fixture
def client(settings: Settings, ledger: Ledger, admin_key: str) -> Iterator[TestClient]:
    """The app, sending an all-scopes key with every request (tests/*/test_keys.py checks
    requests without one, or with a narrower one)."""
    with app_client(settings, ledger, admin_key) as test_client:
        yield test_client


@contextmanager
def shared_client(
    backend: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[tuple[TestClient, str]]:
    """What the `client` fixture gives, and its store's URL, on a store of its own on
    `backend`: for a module-scoped fixture, a story posted once that many tests read."""
    with contextmanager(fresh_database)(backend, tmp_path_factory, request) as url:
        settings = settings_for(url)
        runtime = Runtime(settings)
        try:
            with app_client(settings, runtime.ledger(), make_key(url, "test-admin")) as client:
                yield client, url
        finally:
            runtime.close()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def empty_client(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    """What `client` gives, on one empty store per backend shared by a module's tests that
    store nothing (requests the app refuses, reads). Mark them with one xdist_group, so that
    one process runs them all."""
    with shared_client(request.param, tmp_path_factory, request) as (client, _):
        yield client


@pytest.fixture
def private_postgres() -> Iterator[PrivateServer]:
    """A PostgreSQL of this test's own, which the test may stop and start."""
    try:
        server = PrivateServer()
    except Exception as exc:
        if postgres_required():
            pytest.fail(f"cannot start a private PostgreSQL: {exc}")
        pytest.skip(f"cannot start a private PostgreSQL: {exc}")
    yield server
    server.destroy()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", help="also run the long fault and load runs")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="long run: use scripts/test --slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
