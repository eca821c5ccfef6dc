"""CONTACT_MERGE and CONTACT_DELETE: recorded on the contacts' streams, never lifting an
opt-out; a merge joins the two contacts' consent, whatever the order things arrive in."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from service.runtime import Runtime
from store.config import Settings
from store.ledger import Ledger
from tests import payloads as p
from tests.unit.test_real_callbacks import FIXTURES
from tests.helpers import accept_all, names, stored_events


@pytest.fixture
def runtime(settings: Settings, ledger: Ledger) -> Iterator[Runtime]:
    rt = Runtime(settings, ledger)
    yield rt
    rt.close()


@pytest.mark.parametrize(
    "fixture",
    [
        "CONTACT_MERGE__docs__1.json",
        "CONTACT_MERGE__sdk-dotnet__1.json",
        "CONTACT_MERGE__sdk-java__1.json",
        "CONTACT_MERGE__skills-script__1.json",
    ],
)
def test_a_merge_is_recorded_on_both_contacts(
    ledger: Ledger, database_url: str, fixture: str
) -> None:
    body: dict[str, Any] = orjson.loads((FIXTURES / fixture).read_bytes())
    note = body["contact_merge_notification"]
    [outcome] = accept_all(ledger, [body])
    assert (outcome.status, outcome.trigger) == ("accepted", "CONTACT_MERGE")
    [again] = accept_all(ledger, [body])
    assert again.status == "duplicate"
    merged = [e for e in stored_events(database_url) if names([e]) == ["Contact.Merged"]]
    roles = {e.contact_id: e.role for e in merged}
    assert roles == {
        note["preserved_contact"]["id"]: "preserved",
        note["deleted_contact"]["id"]: "deleted",
    }
    assert all(e.callback["raw"] == orjson.dumps(body).decode() for e in merged)
