"""Every stored callback's answer names its reference: interpreted ones (delivery reports,
submissions, opt-in/out, inbound), the catch-all's (CONTACT_MERGE and the other triggers this
version does not interpret) and duplicates (the reference of the one stored before), each read
back by GET /callbacks/{reference}. Real Sinch bodies (../shared/fixtures), both backends."""

from __future__ import annotations

from urllib.parse import quote

import orjson
from starlette.testclient import TestClient

from domain.callbacks import INTERPRETED_TRIGGERS, detect_trigger
from tests.integration.test_real_callbacks import NAMES_NO_MESSAGE, post
from tests.unit.test_real_callbacks import real_bodies


def test_every_real_callback_is_answered_with_a_reference_that_reads_it_back(
    client: TestClient,
) -> None:
    bodies = [path for path in real_bodies() if path.name != NAMES_NO_MESSAGE]
    assert bodies
    answers = {}
    for path in bodies:
        response = post(client, path.read_bytes())
        assert response.status_code == 200, (path.name, response.text)
        answers[path.name] = response.json()
    triggers = {detect_trigger(orjson.loads(p.read_bytes())) for p in bodies}
    assert {"CONTACT_MERGE", "EVENT_INBOUND", *INTERPRETED_TRIGGERS} <= triggers

    for path in bodies:
        answer = answers[path.name]
        reference = answer["reference"]
        assert isinstance(reference, str) and "/" in reference, (path.name, answer)
        read = client.get(f"/callbacks/{quote(reference, safe='/')}")
        assert read.status_code == 200, (path.name, reference, read.text)
        stored = read.json()
        if answer["status"] == "accepted":
            # The body this answer stored, byte for byte.
            assert stored["raw"].encode() == path.read_bytes(), path.name
        else:
            # A body of the fixtures that repeats an earlier one's fact: the reference is the
            # stored one's, which holds that fact.
            assert answer["status"] == "duplicate", answer
            assert reference in {a["reference"] for a in answers.values() if a is not answer}

    # Sent again, each is a duplicate answered with the stored callback's reference.
    for path in bodies:
        again = post(client, path.read_bytes()).json()
        assert again["status"] == "duplicate", (path.name, again)
        assert again["reference"] == answers[path.name]["reference"], path.name


def test_a_refused_body_names_no_reference(client: TestClient) -> None:
    response = post(client, b"[1, 2]")
    assert response.status_code == 400
    assert "reference" not in response.json()
