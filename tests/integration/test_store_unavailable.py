"""One decision of "the store is unavailable", on both databases' real errors: an outage or a
busy store is retried (the webhook answers 503), an error about the statement is not."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit, urlunsplit

from eventsourcing.persistence import OperationalError
from starlette.testclient import TestClient

from service.settings import backend_for
from store.backend import Backend, StoreContention, store_unavailable


def raised(backend: Backend, sql: str) -> Exception:
    connections = backend.connections()
    try:
        with connections.read() as raw:
            raw.execute(sql)
    except Exception as exc:
        return exc
    finally:
        connections.close()
    raise AssertionError(f"{sql!r} did not fail")


def unreachable_url(url: str, tmp_path: str) -> str:
    if url.startswith("sqlite:"):
        return f"sqlite:///{tmp_path}/no/such/folder/ledger.sqlite3"
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:1"))


def test_a_store_that_cannot_be_reached_is_unavailable(database_url: str, tmp_path: str) -> None:
    backend = backend_for(unreachable_url(database_url, str(tmp_path)), timeout_s=1)
    exc = raised(backend, "SELECT 1")
    assert store_unavailable(backend, exc), repr(exc)
    # as the event-sourcing library hands it on, wrapped
    wrapped = OperationalError(str(exc))
    wrapped.__cause__ = exc
    assert store_unavailable(backend, wrapped)


def test_an_error_about_the_statement_is_not(database_url: str) -> None:
    backend = backend_for(database_url)
    missing = raised(backend, "SELECT * FROM no_such_table")
    assert not store_unavailable(backend, missing), repr(missing)
    wrapped = OperationalError(str(missing))
    wrapped.__cause__ = missing
    assert not store_unavailable(backend, wrapped)
    assert not store_unavailable(backend, ValueError("a bug of ours"))


def test_lost_races_and_the_system_are_unavailable_on_any_backend(database_url: str) -> None:
    backend = backend_for(database_url)
    assert store_unavailable(backend, StoreContention("gave up"))
    assert store_unavailable(backend, OSError("disk gone"))


class Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_a_read_route_that_fails_otherwise_is_a_503_never_a_500(
    client: TestClient, database_url: str
) -> None:
    """A read table gone (an error about the statement, not an outage) is the service's
    fault, not the request's: 503 saying so, and the log names the error's class only."""
    backend = backend_for(database_url, timeout_s=3)
    connections = backend.connections()
    try:
        with connections.transaction() as raw:
            raw.execute("DROP VIEW message_status")
    finally:
        connections.close()
    # The service's own logger, whatever an earlier test configured for the root.
    kept = Kept()
    logging.getLogger("callback_ledger").addHandler(kept)
    try:
        answer = client.get("/messages", params={"contact_id": "+46700000001"})
    finally:
        logging.getLogger("callback_ledger").removeHandler(kept)
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"] == "internal_error"
    assert any("a request failed" in line for line in kept.lines), kept.lines
    assert not any("46700000001" in line for line in kept.lines)
