"""The bench's load: a realistic mix of Sinch callbacks (several statuses per message,
fallbacks, failures, repeats, inbound messages and opt-outs, out of order), signed with the
bench's secret.
"""

from __future__ import annotations

import os
import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from api.signature import sign

SECRET = "bench-secret"


STATUSES = ["QUEUED_ON_CHANNEL", "DELIVERED", "READ"]
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid(when: datetime, rng: random.Random) -> str:
    """A ULID as Sinch's message ids are: 48 bits of milliseconds, then 80 random bits."""
    value = (int(when.timestamp() * 1000) << 80) | rng.getrandbits(80)
    return "".join(CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def envelope(project: str, when: datetime, **trigger: Any) -> dict[str, Any]:
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return {
        "app_id": "01HBENCHAPP0000000000000000",
        "project_id": project,
        "accepted_time": stamp,
        "event_time": stamp,
        **trigger,
    }


def report(
    project: str,
    message: str,
    status: str,
    channel: str,
    number: str,
    contact: str,
    when: datetime,
    reason: str | None = None,
    metadata: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "message_id": message,
        "conversation_id": f"01HCONV{contact}",
        "status": status,
        "channel_identity": {
            "channel": channel,
            "identity": number,
            "app_id": "01HBENCHAPP0000000000000000",
        },
        "contact_id": contact,
        "metadata": f"order-{message[-8:] if metadata is None else metadata}",
        "processing_mode": "CONVERSATION",
    }
    if reason:
        body["reason"] = {
            "code": reason,
            "sub_code": "UNSPECIFIED_SUB_CODE",
            "description": "The recipient could not be reached on this channel.",
        }
    return envelope(project, when, message_delivery_report=body)


def callback_mix(n: int, seed: int = 1, stable_numbers: bool = False) -> list[dict[str, Any]]:
    """About n callbacks: several statuses per message, fallbacks and failures, ~10% repeats,
    ~3% inbound (some STOP), ~1% opt-outs, shuffled so reports arrive out of order.

    Each message goes to one of 20,000 contacts, at a new random number (the worst case for
    what is kept per number: a data key per number and month, a contact-number row), or with
    `stable_numbers` at its contact's own number, as a contact's channel identity is in Sinch."""
    rng = random.Random(seed)
    id_rng = random.Random(f"ids-{seed}")  # apart, so the mix's other draws stay as they were
    # Each seed's messages come after the previous seed's, as time goes on in a real stream.
    start = datetime(2024, 6, 15, 8, tzinfo=UTC) + timedelta(hours=2 * seed)
    out: list[dict[str, Any]] = []
    i = 0
    while len(out) < int(n * 0.86):
        i += 1
        project = f"PROJECT{i % 4}"
        contact_index = rng.randrange(20_000)
        contact = f"01HCONTACT{contact_index:010d}"
        number = f"4670{rng.randrange(10**7):07d}"  # drawn either way: the other draws stay
        if stable_numbers:
            number = f"4671{contact_index:07d}"
        when = start + timedelta(seconds=i * 0.05)
        message, order = ulid(when, id_rng), f"{i % 10**8:08d}"
        if rng.random() < 0.05:
            out.append(
                report(
                    project,
                    message,
                    "QUEUED_ON_CHANNEL",
                    "WHATSAPP",
                    number,
                    contact,
                    when,
                    metadata=order,
                )
            )
            out.append(
                report(
                    project,
                    message,
                    "SWITCHING_CHANNEL",
                    "WHATSAPP",
                    number,
                    contact,
                    when + timedelta(seconds=1),
                    "RECIPIENT_NOT_REACHABLE",
                    metadata=order,
                )
            )
            channel = "SMS"
        else:
            channel = "WHATSAPP"
        steps = STATUSES[: rng.choice([1, 2, 2, 3])]
        if rng.random() < 0.04:
            steps = ["QUEUED_ON_CHANNEL", "FAILED"]
        for k, status in enumerate(steps):
            reason = "RECIPIENT_NOT_REACHABLE" if status == "FAILED" else None
            out.append(
                report(
                    project,
                    message,
                    status,
                    channel,
                    number,
                    contact,
                    when + timedelta(seconds=2 + k),
                    reason,
                    metadata=order,
                )
            )
        if rng.random() < 0.035:
            text = rng.choice(["STOP", "Thanks!", "stop", "When does it arrive?"])
            out.append(
                envelope(
                    project,
                    when,
                    message={
                        "id": f"01HIN{seed:02d}{i:014d}",
                        "direction": "TO_APP",
                        "contact_message": {"text_message": {"text": text}},
                        "channel_identity": {"channel": "SMS", "identity": number},
                        "contact_id": contact,
                        "accept_time": out[-1]["event_time"],
                    },
                )
            )
        if rng.random() < 0.012:
            out.append(
                envelope(
                    project,
                    when,
                    opt_out_notification={
                        "contact_id": contact,
                        "channel": "SMS",
                        "identity": number,
                        "status": "OPT_OUT_SUCCEEDED",
                        "request_id": f"01HREQ{seed:02d}{i:014d}",
                    },
                )
            )
    out += rng.sample(out, k=n - len(out))  # repeats, as retries and several webhooks give
    # Out of order: shuffle within windows, so a message's reports still arrive close together.
    for begin in range(0, len(out), 64):
        window = out[begin : begin + 64]
        rng.shuffle(window)
        out[begin : begin + 64] = window
    return out


def write_signed(path: Path, bodies: list[dict[str, Any]]) -> None:
    timestamp = str(int(time.time()))
    with path.open("w") as f:
        for n, body in enumerate(bodies):
            raw = orjson.dumps(body)
            nonce = f"{n:026d}"
            f.write(
                f"{nonce}\t{timestamp}\t{sign(SECRET, raw, nonce, timestamp)}\t{raw.decode()}\n"
            )


def signed_request(body: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    """A callback's bytes and its signature headers, with a nonce of its own."""
    raw = orjson.dumps(body)
    nonce, ts = os.urandom(10).hex(), str(int(time.time()))
    return raw, {
        "content-type": "application/json",
        "x-sinch-webhook-signature": sign(SECRET, raw, nonce, ts),
        "x-sinch-webhook-signature-nonce": nonce,
        "x-sinch-webhook-signature-timestamp": ts,
    }
