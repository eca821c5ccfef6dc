"""Erasure requests as facts in the log: what was erased, when, by whom and why, never the
personal data itself (subjects are blind indexes). The erasure itself is the destruction of the
subjects' data keys (store.vault); this event is its record, sealed with the rest of the log."""

from __future__ import annotations

from uuid import UUID, uuid4

from eventsourcing.domain import Aggregate, event

from domain.ids import stored


class Erasure(Aggregate):
    TOPIC = stored("erasure", "Erasure")

    # The library would define this base event class itself (never stored here); with an explicit
    # topic on the aggregate, every event class needs one.
    class Created(Aggregate.Created):
        TOPIC = stored("erasure", "Erasure.Created")

    @staticmethod
    def create_id() -> UUID:
        return uuid4()

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
        """`scope`: "identity" (one channel identity) or "contact" (a contact and every
        identity it was seen with); `subjects`: their blind indexes; `by`: the API key's name
        or the operator's; `reason`: free text (it must not hold personal data).
        `forget_consent`: the operator asked for the subjects' opt-out suppression to go too
        (the read side drops it); by default it is kept (README: Personal data). Defaulted,
        so facts recorded before it existed read as "kept"."""
        self.subjects = subjects
        self.scope = scope
        self.erased_at = erased_at
        self.forget_consent = forget_consent
