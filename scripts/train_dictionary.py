"""Trains the zstd dictionary for event state (store.compression) and writes it as
the next version, `store/dictionaries/events-<version>.zdict`:

    .venv/bin/python -m scripts.train_dictionary [--fixtures DIR] [--version N]

The samples are the events this code stores for: the real Sinch bodies in --fixtures (Sinch's
published shapes), and the bench's mix with every identifier, number and order id replaced by a
random one, so the dictionary learns the shapes, keys and enum values, not the bench's own
values (which would flatter the bench's figures). Each is stored twice: in a plaintext store
(one JSON state per event) and in an encrypted one, whose events compress their public and
personal parts apart (store.envelope): both parts are samples too (version 2 on). Shipped
dictionaries are never rewritten: old events name theirs; change CURRENT_VERSION to write with
a new one."""

from __future__ import annotations

import argparse
import asyncio
import base64
import random
import string
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import zstandard

from domain.callbacks import Receipt
from scripts.callback_mix import callback_mix
from service.recorder import Recorder, alone
from service.settings import Settings, open_ledger
from store import compression, envelope
from store.compression import DICT_ID_BASE, dictionary_path, state_compressor
from store.ledger import Ledger
from store.vault import Secrets

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "sinch-callbacks"
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ID_KEYS = {"app_id", "project_id", "message_id", "contact_id", "conversation_id", "id"}
ID_KEYS |= {"request_id", "metadata"}
SIZE = 32 * 1024  # larger dictionaries measured no smaller events


class PlainLedger(Ledger):
    name = "Ledger"  # the same tables (the library names them after the class)
    compress_state = False


def ulid(rng: random.Random) -> str:
    return "01" + "".join(rng.choice(CROCKFORD) for _ in range(24))


def anonymised(value: Any, rng: random.Random) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key in ID_KEYS and isinstance(item, str):
                out[key] = ulid(rng)
            elif key == "identity" and isinstance(item, str):
                out[key] = "".join(rng.choice(string.digits) for _ in item)
            else:
                out[key] = anonymised(item, rng)
        return out
    if isinstance(value, list):
        return [anonymised(item, rng) for item in value]
    return value


def signed_receipt(raw: bytes, rng: random.Random) -> Receipt:
    headers = {
        "x-sinch-webhook-signature": base64.b64encode(rng.randbytes(32)).decode(),
        "x-sinch-webhook-signature-nonce": base64.b64encode(rng.randbytes(16)).decode(),
        "x-sinch-webhook-signature-timestamp": str(rng.randrange(1_700_000_000, 1_900_000_000)),
    }
    # A time of the sample's own (not now), so training again gives the same dictionary.
    received = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(30_000_000))
    return Receipt(raw.decode(), received, True, headers)


def stored(ledger: Ledger, raws: list[bytes], rng: random.Random) -> list[bytes]:
    """The states `ledger` stores for these bodies."""
    recorder = Recorder(alone(ledger), keep_refused=False)  # a refused body: no event, no sample
    try:
        with asyncio.Runner() as runner:
            for raw in raws:
                runner.run(recorder.record(raw, signed_receipt(raw, rng)))
        found = ledger.recorder.select_notifications(start=1, limit=10 * len(raws))
    finally:
        ledger.close()
    return [bytes(n.state) for n in found]


def parts(state: bytes, ledger: Ledger) -> list[bytes]:
    """An encrypted event's public and personal parts' JSON (the dictionary is trained on each)."""
    if not envelope.is_sealed(state):
        return [state]
    public, private = envelope.parts_json(state, ledger.vault, state_compressor())
    return [public] if private is None else [public, private]


def samples(fixtures: Path, count: int, seed: int) -> list[bytes]:
    """Stored states (plain JSON) and encrypted events' parts (JSON) of the fixtures and of
    `count` anonymised callbacks."""
    rng = random.Random(seed)
    raws = [path.read_bytes() for path in sorted(fixtures.glob("*.json"))]
    raws += [orjson.dumps(anonymised(b, rng)) for b in callback_mix(count, seed=seed)]
    found: list[bytes] = []
    with tempfile.TemporaryDirectory() as work:
        plain = Settings(database_url=f"sqlite:///{work}/plain.sqlite3")
        found += stored(open_ledger(cls=PlainLedger, settings=plain), raws, rng)
        sealed = Settings(database_url=f"sqlite:///{work}/sealed.sqlite3")
        secrets = Secrets(rng.randbytes(32), rng.randbytes(32))
        ledger = Ledger.for_backend(sealed.store_backend(), secrets, sealed.classify())
        states = stored(ledger, raws, rng)
        reader = Ledger.for_backend(sealed.store_backend(), secrets, sealed.classify())
        try:
            for state in states:
                found += parts(inflated(state), reader)
        finally:
            reader.close()
    return found


def inflated(state: bytes) -> bytes:
    return state if envelope.is_sealed(state) else state_compressor().decompress(state)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fixtures", type=Path, default=FIXTURES)
    parser.add_argument("--version", type=int, required=True)
    parser.add_argument("--samples", type=int, default=6000)
    args = parser.parse_args(argv)
    path = dictionary_path(args.version)
    if path.exists():
        print(f"{path} exists: shipped dictionaries are never rewritten", file=sys.stderr)
        return 1
    if not dictionary_path(compression.CURRENT_VERSION).exists():
        # Training the version the code names: the stores sampled here write with the one
        # before it (their states are sampled decompressed either way).
        compression.CURRENT_VERSION = args.version - 1
    # zstandard's stub takes any buffer; a list of bytes is one (lists are invariant for mypy).
    states: list[bytes | bytearray | memoryview[int]] = list(
        samples(args.fixtures, args.samples, seed=args.version)
    )
    dictionary = zstandard.train_dictionary(
        SIZE, states, dict_id=DICT_ID_BASE + args.version, level=3, threads=1
    )
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(dictionary.as_bytes())
    compressor = zstandard.ZstdCompressor(dict_data=dictionary)
    packed = sum(len(compressor.compress(s)) for s in states)
    print(f"{path}: {len(states)} samples, {sum(map(len, states)) / len(states):.0f} bytes each, ")
    print(f"{packed / len(states):.0f} compressed (on the samples themselves)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
