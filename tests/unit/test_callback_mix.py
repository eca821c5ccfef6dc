"""The bench's and the soak's load: with stable numbers, a contact is always at its own number,
and the mix is otherwise the same callbacks."""

from __future__ import annotations

from typing import Any

from scripts.callback_mix import callback_mix


def _trigger(body: dict[str, Any]) -> dict[str, Any]:
    return next(v for k, v in body.items() if isinstance(v, dict))


def _number(trigger: dict[str, Any]) -> str:
    return str((trigger.get("channel_identity") or trigger)["identity"])


def test_stable_numbers_give_each_contact_one_number_and_change_nothing_else() -> None:
    random, stable = callback_mix(3000, seed=3), callback_mix(3000, seed=3, stable_numbers=True)
    assert len(random) == len(stable)
    numbers: dict[str, set[str]] = {}
    for a, b in zip(random, stable, strict=True):
        ta, tb = _trigger(a), _trigger(b)
        assert {**ta, "channel_identity": None, "identity": None} == {
            **tb,
            "channel_identity": None,
            "identity": None,
        }
        numbers.setdefault(tb["contact_id"], set()).add(_number(tb))
    assert all(len(found) == 1 for found in numbers.values())
    assert len({n for found in numbers.values() for n in found}) == len(numbers)
    # The default: a new random number nearly every message, whatever the contact.
    messages = {_trigger(a).get("message_id"): _number(_trigger(a)) for a in random}
    assert len(set(messages.values())) > 0.9 * len(messages)
