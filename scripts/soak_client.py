"""The soak's load client: signed callbacks sent once each over keep-alive connections, and
the chatty contact's messages timed one at a time.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson

from api.signature import sign
from scripts.callback_mix import SECRET, signed_request

CHATTY = "01HCHATTYCONTACT0000000000"


def chatty_inbound(n: int, key: str) -> dict[str, Any]:
    when = datetime(2024, 7, 1, tzinfo=UTC) + timedelta(seconds=n)
    return {
        "app_id": "01HBENCHAPP0000000000000000",
        "project_id": "PROJECT0",
        "event_time": when.isoformat().replace("+00:00", "Z"),
        "message": {
            "id": f"01HCHAT{key}{n:012d}",
            "direction": "TO_APP",
            "contact_message": {"text_message": {"text": f"message {n}"}},
            "channel_identity": {"channel": "SMS", "identity": "46700000099"},
            "contact_id": CHATTY,
        },
    }


async def _connection(
    host: str, port: int, requests: list[bytes], latencies: list[float], statuses: list[int]
) -> None:
    """One keep-alive connection sending its requests one after another."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for request in requests:
            began = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - began)
            statuses.append(int(head[9:12]))
    finally:
        writer.close()


def request_bytes(port: int, raw: bytes, nonce: str, timestamp: str) -> bytes:
    return (
        f"POST /webhooks/sinch HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Type: application/json\r\n"
        f"x-sinch-webhook-signature: {sign(SECRET, raw, nonce, timestamp)}\r\n"
        f"x-sinch-webhook-signature-nonce: {nonce}\r\n"
        f"x-sinch-webhook-signature-timestamp: {timestamp}\r\n"
        f"Content-Length: {len(raw)}\r\n\r\n"
    ).encode() + raw


def send_once(
    port: int, bodies: list[dict[str, Any]], prefix: str, connections: int
) -> dict[str, Any]:
    """Each body once, signed now with a nonce of its own, over `connections` keep-alive
    connections: a plain asyncio client, lighter than an HTTP library on a 2-core machine."""
    timestamp = str(int(time.time()))
    requests = [
        request_bytes(port, orjson.dumps(body), f"{prefix}{n:020d}", timestamp)
        for n, body in enumerate(bodies)
    ]
    latencies: list[float] = []
    statuses: list[int] = []

    async def run() -> None:
        await asyncio.gather(
            *(
                _connection("127.0.0.1", port, requests[k::connections], latencies, statuses)
                for k in range(connections)
            )
        )

    began = time.perf_counter()
    asyncio.run(run())
    elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "body_bytes": sum(len(orjson.dumps(body)) for body in bodies),
        "rate": len(requests) / elapsed,
        "elapsed_s": elapsed,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000 if latencies else 0.0,
        "non2xx": sum(not 200 <= status < 300 for status in statuses),
    }


def signed_post(client: httpx.Client, url: str, body: dict[str, Any]) -> tuple[float, Any]:
    """One callback, signed with a nonce of its own: (milliseconds to the answer, the answer)."""
    raw, headers = signed_request(body)
    began = time.perf_counter()
    response = client.post(url + "/webhooks/sinch", content=raw, headers=headers)
    return (time.perf_counter() - began) * 1000, response


def time_chatty(url: str, start: int, count: int = 15, fresh: bool = False) -> float:
    """Median ms to record one more inbound message of the chatty contact, one at a time; with
    `fresh`, the first message of as many new contacts instead (the same work on a stream of
    one event, at the same moment: what the store as a whole costs then)."""
    times = []
    with httpx.Client(timeout=30) as client:
        for n in range(start, start + count):
            body = chatty_inbound(n, "T")
            if fresh:
                body["message"]["contact_id"] = f"01HFRESH{n:018d}"
            elapsed_ms, response = signed_post(client, url, body)
            times.append(elapsed_ms)
            if response.status_code != 200:
                raise RuntimeError(f"chatty message refused: {response.text}")
    return statistics.median(times)
