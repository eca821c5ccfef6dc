"""What we know about how a callback reached us: kept beside every event as the audit record."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Receipt:
    """The callback exactly as received: raw text (never re-serialised), arrival time on our
    clock, whether its signature was verified, and the signature headers that came with it."""

    raw: str
    received_at: datetime
    signature_verified: bool
    headers: dict[str, str] = field(default_factory=dict)

    def as_event_data(self) -> dict[str, Any]:
        return {
            "raw": self.raw,
            "received_at": self.received_at.isoformat(),
            "signature_verified": self.signature_verified,
            "headers": dict(self.headers),
        }
