"""Callbacks we keep but do not interpret: other triggers (the catch-all) and bodies that could
not be read (the quarantine). One aggregate per distinct body, named by the body's hash, so a
retried body is stored once and concurrent bodies never contend for one stream."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain import ids
from domain.ids import stored


class UnrecognisedCallback(Aggregate):
    """A callback of a trigger we do not interpret (EVENT_INBOUND, ...) or of none we know.
    Kept whole, so a later version can interpret it from the log."""

    TOPIC = stored("unrecognised", "UnrecognisedCallback")

    # With an explicit topic on the aggregate, every event class needs one, even this base.
    class Created(Aggregate.Created):
        TOPIC = stored("unrecognised", "UnrecognisedCallback.Created")

    @staticmethod
    def create_id(body_hash: str) -> UUID:
        return ids.body_id("unrecognised", body_hash)

    # `app_id` and `event_time` (as the body gives it): what the body says of itself, public,
    # so the callbacks list shows them without opening the body. Events from before lack them.
    @event("Received", topic=stored("unrecognised", "UnrecognisedCallback.Received"))
    def __init__(
        self,
        body_hash: str,
        trigger: str,
        project_id: str | None,
        callback: dict[str, Any],
        app_id: str | None = None,
        event_time: str | None = None,
    ) -> None:
        self.trigger = trigger
        self.project_id = project_id


class QuarantinedCallback(Aggregate):
    """A body we refused (not JSON, or a known trigger with invalid fields) but keep, so an
    operator can fix it and feed it back. The body is stored once: as `callback["raw"]` when
    that is exactly the body and no longer than its base64, else as `raw_base64`."""

    TOPIC = stored("unrecognised", "QuarantinedCallback")

    class Created(Aggregate.Created):
        TOPIC = stored("unrecognised", "QuarantinedCallback.Created")

    @staticmethod
    def create_id(body_hash: str) -> UUID:
        return ids.body_id("quarantine", body_hash)

    @event("Quarantined", topic=stored("unrecognised", "QuarantinedCallback.Quarantined"))
    def __init__(
        self,
        body_hash: str,
        trigger: str,
        status_code: int,
        problems: list[str],
        raw_base64: str | None,
        callback: dict[str, Any],
    ) -> None:
        self.trigger = trigger
        self.problems = problems

    # Set by a resolution (console: re-ingested or reviewed); the body itself stays.
    resolution: dict[str, Any] | None = None

    def resolve(self, outcome: str, by: str, at: str, note: str, result: str | None) -> bool:
        """Records how an operator resolved this entry, once: True if it was recorded now,
        False if it was resolved before (a second resolve, or a retried one, adds nothing)."""
        if self.resolution is not None:
            return False
        self._resolved(outcome=outcome, by=by, at=at, note=note, result=result)
        return True

    @event("Resolved", topic=stored("unrecognised", "QuarantinedCallback.Resolved"))
    def _resolved(self, outcome: str, by: str, at: str, note: str, result: str | None) -> None:
        self.resolution = {"outcome": outcome, "by": by, "at": at, "note": note, "result": result}
