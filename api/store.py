"""Holds the Ledger, opening it on first use, so the service starts (and answers 503) while
its database is still down, and heals without a restart when the database comes back."""

from __future__ import annotations

import logging
import threading

from callback_ledger.config import Settings
from callback_ledger.ledger import Ledger

log = logging.getLogger("callback_ledger")


class LedgerHolder:
    def __init__(self, settings: Settings, ledger: Ledger | None = None) -> None:
        self._settings = settings
        self._ledger = ledger
        self._lock = threading.Lock()

    def get(self) -> Ledger:
        """The Ledger; raises the store's error while it cannot be opened."""
        if self._ledger is None:
            with self._lock:
                if self._ledger is None:
                    self._ledger = Ledger.from_settings(self._settings)
        return self._ledger

    def close(self) -> None:
        if self._ledger is not None:
            self._ledger.close()
