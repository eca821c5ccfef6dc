"""Keeps the read tables following the log: the one loop, run in a daemon thread while the
service runs (`start`, LEDGER_PROJECTIONS=inline) or in the foreground by the worker
(`callback-ledger project`, `run`)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from projections.projector import Projector

log = logging.getLogger("callback_ledger")


class Follower:
    """Catches the projections up whenever woken (after each accepted callback) and at least
    every `idle_s`, no more often than every `min_interval_s`. An error is logged, passed to
    `on_error`, kept in `last_error` and retried with back-off; the lag on /healthz shows it."""

    def __init__(
        self,
        projector: Callable[[], Projector],
        idle_s: float = 0.5,
        min_interval_s: float = 0.3,
        on_error: Callable[[], None] | None = None,
    ) -> None:
        self._projector = projector
        self._idle_s = idle_s
        # Under load, waking on every commit would apply pages of a few events each: waiting a
        # little between catch-ups makes pages larger and keeps the lag well under a second.
        self._min_interval_s = min_interval_s
        self._on_error = on_error
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.run, name="projections", daemon=True)
        self.last_error: str | None = None

    def wake(self) -> None:
        self._wake.set()

    def halt(self) -> None:
        """Ends `run` after the catch-up under way (safe in a signal handler)."""
        self._stop.set()
        self._wake.set()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.halt()
        self._thread.join(timeout=30)

    def run(self, once: bool = False) -> None:
        """Follows until halted; with `once`, catches up once (or fails once) and returns."""
        backoff = self._idle_s
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self._projector().catch_up()
                self.last_error = None
                backoff = self._idle_s
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                if self._on_error is not None:
                    self._on_error()
                log.warning("projections could not catch up (retrying): %s", self.last_error)
                backoff = min(backoff * 2, 30.0)
            if once:
                return
            self._stop.wait(self._min_interval_s)
            self._wake.wait(backoff)
