"""The live projection lag, read from a running server's /healthz detail (which needs an API
key: one is created in the store, as `keys create` does).
"""

from __future__ import annotations

import threading
import time

import httpx


def key_headers(database_url: str) -> dict[str, str]:
    """An API key for /healthz's detail (a key is created in the store, as `keys create` does)."""
    from access.api_keys import SCOPES, KeyStore
    from service.settings import backend_for
    from store.backend import Database

    db = Database(backend_for(database_url))
    try:
        key = KeyStore(db).create(f"bench-{time.time_ns()}", SCOPES)
    finally:
        db.close()
    return {"Authorization": f"Bearer {key}"}


class LagProbe:
    """Samples /healthz during a run: the worst projection lag, in events."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.url = url
        self.headers = headers
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                health = httpx.get(self.url + "/healthz", headers=self.headers, timeout=5).json()
                self.samples.append(max(p["lag"] for p in health["projections"].values()))
            except (httpx.HTTPError, KeyError, ValueError):
                continue

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.samples, default=-1)

    def seconds_to_catch_up(self, limit_s: float = 60) -> float:
        started = time.monotonic()
        while time.monotonic() - started < limit_s:
            health = httpx.get(self.url + "/healthz", headers=self.headers, timeout=5).json()
            if all(p["lag"] == 0 for p in health["projections"].values()):
                return time.monotonic() - started
            time.sleep(0.05)
        return float("inf")


def projection_lag(url: str, headers: dict[str, str]) -> int:
    """The largest lag of the projections, in events, from /healthz's detail (a key's; -1 if
    not given)."""
    try:
        health = httpx.get(url + "/healthz", headers=headers, timeout=30).json()
        return max(int(p.get("lag", 0)) for p in health["projections"].values())
    except (httpx.HTTPError, KeyError, ValueError, TypeError):
        return -1


def wait_caught_up(url: str, headers: dict[str, str], limit_s: float = 120) -> float:
    """Seconds until the projections have caught up (lag 0), at most `limit_s`."""
    began = time.monotonic()
    while time.monotonic() - began < limit_s and projection_lag(url, headers) != 0:
        time.sleep(0.05)
    return time.monotonic() - began
