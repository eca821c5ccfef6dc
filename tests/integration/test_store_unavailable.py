"""One decision of "the store is unavailable", on both databases' real errors: an outage or a
busy store is retried (the webhook answers 503), an error about the statement is not."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from eventsourcing.persistence import OperationalError

from store.backend import Backend, StoreContention, store_unavailable
from store.config import backend_for


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
