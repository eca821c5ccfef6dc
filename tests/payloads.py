"""Realistic Sinch callback bodies and signing, for tests and scripts."""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import orjson

from api.signature import sign

FIXTURES = Path(__file__).parent / "fixtures"


def seed(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def envelope(project_id: str = "PROJECT1", **extra: Any) -> dict[str, Any]:
    return {
        "app_id": "APP1",
        "project_id": project_id,
        "accepted_time": "2024-06-15T14:25:10.456Z",
        "event_time": "2024-06-15T14:25:09.123Z",
        **extra,
    }


def delivery(
    message_id: str = "MSG1",
    status: str = "DELIVERED",
    channel: str | None = "WHATSAPP",
    identity: str = "46732001122",
    event_time: str = "2024-06-15T14:25:09.123Z",
    **report: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "message_id": message_id,
        "conversation_id": "CONV1",
        "status": status,
        "contact_id": "CONTACT1",
        "metadata": "order-123",
        "processing_mode": "CONVERSATION",
        **report,
    }
    if channel is not None:
        body["channel_identity"] = {"channel": channel, "identity": identity, "app_id": "APP1"}
    return envelope(event_time=event_time, message_delivery_report=body)


def submit(
    message_id: str = "MSG1",
    channel: str | None = "WHATSAPP",
    identity: str = "46732001122",
    event_time: str = "2024-06-15T14:25:08.000Z",
    **note: Any,
) -> dict[str, Any]:
    """A MESSAGE_SUBMIT notification: Sinch handed the message to a channel."""
    body: dict[str, Any] = {
        "message_id": message_id,
        "conversation_id": "CONV1",
        "contact_id": "CONTACT1",
        "metadata": "order-123",
        "processing_mode": "CONVERSATION",
        "submitted_message": {"text_message": {"text": "Your order has shipped"}},
        **note,
    }
    if channel is not None:
        body["channel_identity"] = {"channel": channel, "identity": identity, "app_id": "APP1"}
    return envelope(event_time=event_time, message_submit_notification=body)


def opt(
    kind: str = "OPT_OUT",
    status: str | None = None,
    contact_id: str | None = "CONTACT1",
    channel: str = "SMS",
    identity: str = "46732001122",
    request_id: str | None = "REQ1",
    event_time: str = "2024-06-15T15:00:00Z",
) -> dict[str, Any]:
    note: dict[str, Any] = {
        "channel": channel,
        "identity": identity,
        "status": status or f"{kind}_SUCCEEDED",
        "processing_mode": "CONVERSATION",
    }
    if contact_id is not None:
        note["contact_id"] = contact_id
    if request_id is not None:
        note["request_id"] = request_id
    return envelope(event_time=event_time, **{f"{kind.lower()}_notification": note})


def inbound(
    message_id: str = "IN1",
    text: str | None = "STOP",
    contact_id: str | None = "CONTACT1",
    channel: str = "SMS",
    identity: str = "+46732001122",
    event_time: str = "2024-06-15T15:10:00Z",
) -> dict[str, Any]:
    contact_message: dict[str, Any] = (
        {"text_message": {"text": text}}
        if text is not None
        else {"media_message": {"url": "https://example.invalid/cat.jpg"}}
    )
    message: dict[str, Any] = {
        "id": message_id,
        "direction": "TO_APP",
        "contact_message": contact_message,
        "channel_identity": {"channel": channel, "identity": identity, "app_id": "APP1"},
        "conversation_id": "CONV1",
        "accept_time": event_time,
        "processing_mode": "CONVERSATION",
    }
    if contact_id is not None:
        message["contact_id"] = contact_id
    return envelope(event_time=event_time, message=message)


def encode(body: dict[str, Any] | bytes) -> bytes:
    return body if isinstance(body, bytes) else orjson.dumps(body)


def signed_headers(
    raw: bytes, secret: str, *, nonce: str | None = None, timestamp: int | None = None
) -> dict[str, str]:
    nonce = nonce or secrets.token_hex(13)
    ts = str(int(time.time()) if timestamp is None else timestamp)
    return {
        "content-type": "application/json",
        "x-sinch-webhook-signature": sign(secret, raw, nonce, ts),
        "x-sinch-webhook-signature-nonce": nonce,
        "x-sinch-webhook-signature-timestamp": ts,
        "x-sinch-webhook-signature-algorithm": "HmacSHA256",
    }
