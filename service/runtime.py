"""The one wiring module: builds the Ledger, the read-table database and the projector from
Settings. Opened on first use, so the service starts (and answers 503) while its database is
still down, and heals without a restart when it comes back."""

from __future__ import annotations

import threading

from projections.projector import Projector, all_projections
from projections.rules import Keywords
from store.config import Settings
from store.db import Database
from store.ledger import Ledger
from store.postgres_writer import LoopGroupCommit
from store.sqlite_writer import GroupCommitWriter

Writer = GroupCommitWriter | LoopGroupCommit


class Runtime:
    def __init__(self, settings: Settings, ledger: Ledger | None = None) -> None:
        self.settings = settings
        self._ledger = ledger
        self._projector: Projector | None = None
        self._db: Database | None = None
        self._writer: Writer | None = None
        self._lock = threading.Lock()

    def opened_ledger(self) -> Ledger | None:
        """The Ledger if it is open already (no wait, no I/O): the hot path's shortcut."""
        return self._ledger

    def ledger(self) -> Ledger:
        """The Ledger; raises the store's error while it cannot be opened."""
        if self._ledger is None:
            with self._lock:
                if self._ledger is None:
                    self._ledger = Ledger.from_settings(self.settings)
        return self._ledger

    def opened_writer(self) -> Writer | None:
        return self._writer

    def writer(self) -> Writer:
        """The group commit for requests on the event loop: on the loop itself for
        PostgreSQL, in a thread for SQLite (no asynchronous driver)."""
        if self._writer is None:
            ledger = self.ledger()
            with self._lock:
                if self._writer is None:
                    if self.settings.database_url.startswith("sqlite:"):
                        self._writer = GroupCommitWriter(ledger)
                    else:
                        self._writer = LoopGroupCommit(ledger, self.settings)
        return self._writer

    async def aclose_writer(self) -> None:
        if self._writer is not None:
            await self._writer.aclose()
            self._writer = None

    def projector(self) -> Projector:
        if self._projector is None:
            ledger = self.ledger()
            with self._lock:
                if self._projector is None:
                    if self._db is None:
                        self._db = Database(self.settings.database_url, self.settings.db_timeout_s)
                    keywords = Keywords.build(
                        self.settings.keyword_languages,
                        self.settings.opt_out_keywords,
                        self.settings.opt_in_keywords,
                        self.settings.help_keywords,
                    )
                    projector = Projector(
                        self._db,
                        ledger.recorder.events_table_name,
                        all_projections(keywords, dict(self.settings.next_actions)),
                    )
                    projector.setup()
                    self._projector = projector
        return self._projector

    def database(self) -> Database:
        return self.projector().db

    def close(self) -> None:
        if isinstance(self._writer, GroupCommitWriter):
            self._writer.stop()
        if self._db is not None:
            self._db.close()
        if self._ledger is not None:
            self._ledger.close()
