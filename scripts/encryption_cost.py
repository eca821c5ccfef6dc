"""What encrypting personal data costs one event, without a database: the bench's mix of
delivery reports encoded and decoded by the store's mapper, plaintext against encrypted, in
alternating rounds (best of each):

    .venv/bin/python -m scripts.encryption_cost [--callbacks 20000] [--rounds 3]

Prints µs per event to encode (the write path), to decode for the projections (replay and
the live follower: an encrypted report's public part alone, `projections.log_reader`), to
open every field (what showing it, an export or evidence does), and stored bytes per event
(the key rows come on top: one per subject, class and month)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from eventsourcing.persistence import Mapper

from domain.callbacks import DeliveryCallback, Receipt, parse_callback
from domain.message import Message
from projections.log_reader import decode_state, public_enough
from scripts.callback_mix import callback_mix
from store import envelope, spellings
from store.compression import state_compressor
from store.ledger import Ledger
from store.mapper import FastMapper
from store.vault import Secrets, Vault


class MemoryKeys:
    """The key table, in memory."""

    def __init__(self) -> None:
        self.wrapped: dict[bytes, bytes] = {}

    def load(self, key_ids: Sequence[bytes]) -> dict[bytes, bytes]:
        return {k: self.wrapped[k] for k in key_ids if k in self.wrapped}


def report_events(count: int) -> list[Any]:
    events: list[Any] = []
    for i, body in enumerate(callback_mix(count, 1)):
        if "message_delivery_report" not in body:
            continue
        message = Message(project_id="P", message_id=f"M{i}")
        receipt = Receipt(orjson.dumps(body).decode(), datetime.now(UTC), True)
        callback = parse_callback("MESSAGE_DELIVERY", body)
        assert isinstance(callback, DeliveryCallback)
        message.record_report(callback, receipt)
        events += message.collect_events()
    return events


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--callbacks", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    transcoder = Ledger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}).mapper.transcoder
    events = report_events(args.callbacks)
    keys = MemoryKeys()
    plain = FastMapper(Mapper(transcoder, state_compressor()))
    sealed = FastMapper(Mapper(transcoder, state_compressor()))
    sealed.vault = Vault(Secrets(os.urandom(32), os.urandom(32)), keys)
    results: dict[str, list[float]] = {}
    sizes: dict[str, float] = {}
    for _ in range(args.rounds):
        for name, mapper in (("plaintext", plain), ("encrypted", sealed)):
            started = time.perf_counter()
            stored = [mapper.to_stored_event(e) for e in events]
            encode = (time.perf_counter() - started) / len(events) * 1e6
            for row in mapper.vault.pending(envelope.key_ids([s.state for s in stored])):
                keys.wrapped[row.key_id] = row.wrapped
            reader = Vault(mapper.vault.secrets, keys) if mapper.vault.encrypted else None
            started = time.perf_counter()
            for s in stored:  # as the log reader gives them: under their topic in full
                if public_enough(s.state, spellings.read(s.topic)) is None:
                    decode_state(s.state, reader, spellings.read(s.topic))
            decode = (time.perf_counter() - started) / len(events) * 1e6
            started = time.perf_counter()
            if reader is not None:  # a fresh process: its keys loaded a page at a time
                reader.prefetch(envelope.key_ids([s.state for s in stored]))
            for s in stored:
                decode_state(s.state, reader, spellings.read(s.topic))
            opened = (time.perf_counter() - started) / len(events) * 1e6
            best = results.setdefault(name, [encode, decode, opened])
            results[name] = [min(b, m) for b, m in zip(best, (encode, decode, opened), strict=True)]
            sizes[name] = sum(len(s.state) for s in stored) / len(stored)
    print(f"{len(events):,} delivery events of the bench's mix, best of {args.rounds} rounds")
    print(f"{'':12}{'encode µs':>12}{'project µs':>12}{'open µs':>10}{'bytes':>8}")
    for name, (encode, decode, opened) in results.items():
        print(f"{name:12}{encode:12.1f}{decode:12.1f}{opened:10.1f}{sizes[name]:8.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
