"""Reading one event back by its reference `<stream>/<key>` (the audit's raw callback
behind a fact)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.utils import get_topic

from domain.message import Message, report_key, submission_key
from store import dedupe, spellings
from store.backend import Backend
from store.catch_all import CATCH_ALL_KEY, CATCH_ALL_TOPIC

# How a message's stream starts: Registered (then its first report), or FirstReported.
MESSAGE_CREATED = (get_topic(Message.Registered), get_topic(Message.FirstReported))  # type: ignore[attr-defined]


class KeyedEvents(Application[UUID]):
    """A part of store.ledger.Ledger."""

    backend: Backend

    def keyed_event(self, originator_id: UUID, key: str) -> Any | None:
        """The event a reference `<stream>/<key>` names, or None. A contact's is found by the
        key index and only it is read; a message's stream holds one event per distinct report
        (few), so it is read whole, as before."""
        version = self._keyed_version(originator_id, key)
        if version is not None:
            stored = self.recorder.select_events(originator_id, gt=version - 1, lte=version)
            return self.mapper.to_domain_event(stored[0]) if stored else None
        first = self.recorder.select_events(originator_id, lte=1)
        if first and key == CATCH_ALL_KEY and first[0].topic == CATCH_ALL_TOPIC:
            return self.mapper.to_domain_event(first[0])  # the catch-all's one event
        if not first or spellings.read(first[0].topic) not in MESSAGE_CREATED:
            return None
        for stored_event in self.recorder.select_events(originator_id):
            if spellings.read(stored_event.topic) == MESSAGE_CREATED[0]:
                continue
            event = self.mapper.to_domain_event(stored_event)
            if (
                isinstance(event, Message.DeliveryReported | Message.FirstReported)
                and report_key(event.channel, event.status) == key
            ) or (isinstance(event, Message.Submitted) and submission_key(event.channel) == key):
                return event
        return None

    def _keyed_version(self, originator_id: UUID, key: str) -> int | None:
        """The version of a Contact fact by its key: one primary-key lookup in the dedupe
        table (store.dedupe), whatever the stream's length."""
        sql = (
            f"SELECT originator_version FROM {dedupe.TABLE} "
            "WHERE originator_id = ? AND dedupe_key = ?"
        )
        params = [self.backend.stream_param(originator_id), dedupe.key_bytes(key)]
        rows = self.backend.select(self.recorder.datastore, sql, params)  # type: ignore[attr-defined]
        return int(rows[0]["originator_version"]) if rows else None
