"""What /healthz knows beyond a ping: whether writes are failing now, and whether the
projections are moving. Per process, in memory."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from projections.faults import summary


@dataclass
class WriteHealth:
    """The outcome of the last write attempt: a store that answers reads but refuses writes
    (a full disk, a read-only replica) must not look healthy."""

    last_ok: float | None = None
    last_error: float | None = None
    reason: str = ""

    def ok(self) -> None:
        self.last_ok = time.monotonic()

    def failed(self, exc: BaseException) -> None:
        self.last_error = time.monotonic()
        self.reason = summary(exc)

    def problem(self, window_s: float) -> str | None:
        """Why writes look broken: the last attempt failed, within `window_s`."""
        if self.last_error is None or (self.last_ok or 0) > self.last_error:
            return None
        ago = time.monotonic() - self.last_error
        if ago > window_s:
            return None
        return f"the last write failed {ago:.0f} s ago: {self.reason}"


@dataclass
class Progress:
    """When each projection's position last moved, as this process saw it."""

    seen: dict[str, tuple[int, float]] = field(default_factory=dict)

    def stalled(self, name: str, position: int, lag: int, max_lag_s: float) -> str | None:
        now = time.monotonic()
        known = self.seen.get(name)
        if known is None or known[0] != position or lag == 0:
            self.seen[name] = (position, now)
            return None
        still = now - known[1]
        if still <= max_lag_s:
            return None
        return f"{lag} events behind and not moving for {still:.0f} s"
