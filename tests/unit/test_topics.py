"""Every persisted class keeps the topic stores hold it under (domain/ids.py): a moved or
renamed module must not change what the log says, or earlier stores stop loading."""

from __future__ import annotations

from eventsourcing.domain import Aggregate, CanMutateAggregate
from eventsourcing.utils import get_topic, resolve_topic

from domain import callbacks, contact, erasure, message

# The module each aggregate was first stored from, where it lives elsewhere now.
FIRST_MODULE = {"UnrecognisedCallback": "unrecognised", "QuarantinedCallback": "unrecognised"}


def persisted() -> list[type]:
    found: list[type] = []
    for module in (message, contact, callbacks, erasure):
        for aggregate in vars(module).values():
            if isinstance(aggregate, type) and issubclass(aggregate, Aggregate):
                if aggregate.__module__ != module.__name__:
                    continue
                found.append(aggregate)
                found += [
                    value
                    for name, value in vars(aggregate).items()
                    if isinstance(value, type)
                    and issubclass(value, CanMutateAggregate)
                    and name != "Event"
                ]
    return found


def test_each_persisted_class_keeps_its_first_topic() -> None:
    classes = persisted()
    assert len(classes) >= 14
    for cls in classes:
        aggregate = cls.__qualname__.split(".")[0]
        module = FIRST_MODULE.get(aggregate, cls.__module__.rsplit(".", 1)[-1])
        assert get_topic(cls) == f"callback_ledger.domain.{module}:{cls.__qualname__}"
        assert resolve_topic(get_topic(cls)) is cls
