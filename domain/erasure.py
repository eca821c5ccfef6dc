"""Erasure requests as facts in the log: what was erased, when, by whom and why, never the
personal data (subjects are blind indexes). The erasure itself destroys the subjects' data keys
(privacy.erasure); this event is its record, sealed with the rest of the log."""

from __future__ import annotations

from eventsourcing.domain import Aggregate, event

from domain.ids import stored


class Erasure(Aggregate):
    TOPIC = stored("erasure", "Erasure")

    # With an explicit topic on the aggregate, every event class needs one, even this base.
    class Created(Aggregate.Created):
        TOPIC = stored("erasure", "Erasure.Created")

    @event("Erased", topic=stored("erasure", "Erasure.Erased"))
    def __init__(
        self,
        subjects: list[str],
        scope: str,
        channel: str | None,
        project_id: str | None,
        by: str,
        reason: str,
        erased_at: str,
        keys_destroyed: int,
        forget_consent: bool = False,
    ) -> None:
        """`scope`: "identity" or "contact" (and every identity it was seen with); `by`: the
        API key's name or the operator's; `reason` must not hold personal data.
        `forget_consent`: drop the subjects' opt-out suppression too; defaulted, so facts
        recorded before it existed read as "kept"."""
        self.subjects = subjects
        self.scope = scope
        self.erased_at = erased_at
        self.forget_consent = forget_consent
