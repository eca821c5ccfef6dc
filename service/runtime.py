"""The one wiring point: from Settings it builds the backend once, and from it the Ledger, the
group commit, the read tables' database, the projector and the live follower. Each is opened on
first use, so `serve` starts (and answers 503) while its database is down, and heals without a
restart when it comes back."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from projections.follower import Follower as LiveFollower
from projections.projector import Projector, all_projections
from service.recorder import Store
from service.settings import Settings
from store.backend import Backend, Database
from store.commands import Command, Outcome
from store.group_commit import Observer, Writer
from store.ledger import Ledger
from store.postgres import PostgresBackend, PostgresGroupCommit
from store.sqlite import SQLiteGroupCommit


class Runtime:
    """`observe`: told of each group commit; `on_follower_error`: of each failed pass of the
    live follower (`serve` passes the metrics' hooks). A context manager: `close` on exit."""

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger | None = None,
        observe: Observer | None = None,
        on_follower_error: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.observe = observe
        self.on_follower_error = on_follower_error
        self.backend: Backend = ledger.backend if ledger is not None else settings.store_backend()
        self._ledger = ledger
        self._projector: Projector | None = None
        self._db: Database | None = None
        self._writer: Writer | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def opened_ledger(self) -> Ledger | None:
        """The Ledger if it is open already (no wait, no I/O): the hot path's shortcut."""
        return self._ledger

    def ledger(self) -> Ledger:
        """The Ledger; raises the store's error while it cannot be opened."""
        if self._ledger is None:
            db = self.store_database()  # before the lock: it takes it too
            with self._lock:
                if self._ledger is None:
                    self._ledger = Ledger.for_backend(
                        self.backend, self.settings.secrets(), self.settings.classify(), db
                    )
        return self._ledger

    def opened_writer(self) -> Writer | None:
        return self._writer

    def grouped(self) -> Store:
        """The recorder's way to the store on an event loop: the Ledger opened off the loop on
        first use, and each command through the group commit, so concurrent callbacks share
        a transaction."""

        async def ledger() -> Ledger:
            opened = self.opened_ledger()
            return opened if opened is not None else await asyncio.to_thread(self.ledger)

        async def commit(command: Command) -> Outcome:
            return await self.writer().commit(command)

        return Store(ledger, commit)

    def writer(self) -> Writer:
        """The group commit for requests on the event loop: on the loop itself for
        PostgreSQL, in a writer thread for SQLite (no asynchronous driver)."""
        if self._writer is None:
            ledger = self.ledger()
            with self._lock:
                if self._writer is None:
                    self._writer = (
                        PostgresGroupCommit(ledger, self.backend, observe=self.observe)
                        if isinstance(self.backend, PostgresBackend)
                        else SQLiteGroupCommit(ledger, observe=self.observe)
                    )
        return self._writer

    async def aclose_writer(self) -> None:
        if self._writer is not None:
            await self._writer.aclose()
            self._writer = None

    def store_database(self) -> Database:
        """The database's connections for the tables beside the log (the API keys, the
        access log), and, once `projector` set them up, the read tables."""
        if self._db is None:
            with self._lock:
                if self._db is None:
                    self._db = Database(self.backend)
        return self._db

    def projector(self) -> Projector:
        if self._projector is None:
            ledger = self.ledger()
            db = self.store_database()
            with self._lock:
                if self._projector is None:
                    projections = all_projections(
                        self.settings.keywords(), dict(self.settings.next_actions), ledger.vault
                    )
                    projector = Projector(db, ledger.events_table, projections, vault=ledger.vault)
                    projector.setup()
                    self._projector = projector
        return self._projector

    def database(self) -> Database:
        """The read tables' database, set up."""
        return self.projector().db

    def follower(self) -> LiveFollower | None:
        """The in-process follower of the log into the read tables, when `serve` keeps them
        itself (LEDGER_PROJECTIONS=inline); not started."""
        if self.settings.projections != "inline":
            return None
        return LiveFollower(self.projector, on_error=self.on_follower_error)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._db is not None:
            self._db.close()
        if self._ledger is not None:
            self._ledger.close()
