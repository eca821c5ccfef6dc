"""Sinch webhook signatures: base64(HMAC-SHA256(secret, raw_body "." nonce "." timestamp))."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence

SIGNATURE = "x-sinch-webhook-signature"
NONCE = "x-sinch-webhook-signature-nonce"
TIMESTAMP = "x-sinch-webhook-signature-timestamp"
ALGORITHM = "x-sinch-webhook-signature-algorithm"
HEADERS = (SIGNATURE, NONCE, TIMESTAMP, ALGORITHM)


class SignatureError(ValueError):
    pass


def sign(secret: str, body: bytes, nonce: str, timestamp: str) -> str:
    message = body + b"." + nonce.encode() + b"." + timestamp.encode()
    digest = hmac.digest(secret.encode(), message, hashlib.sha256)
    return base64.b64encode(digest).decode()


def verify(
    secrets: Sequence[str],
    body: bytes,
    headers: Mapping[str, str],
    now: float,
    tolerance_s: int,
) -> None:
    """Raises SignatureError saying what is wrong. Any configured secret may match, so a secret
    can be rotated without losing callbacks signed with the old one."""
    missing = [h for h in (SIGNATURE, NONCE, TIMESTAMP) if not headers.get(h)]
    if missing:
        raise SignatureError(f"missing signature header(s): {', '.join(missing)}")
    algorithm = headers.get(ALGORITHM)
    if algorithm and algorithm.lower() != "hmacsha256":
        raise SignatureError(f"unsupported signature algorithm {algorithm[:40]!r}")
    timestamp = headers[TIMESTAMP]
    # Unix seconds have at most a dozen digits; hundreds would overflow the clock arithmetic.
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        raise SignatureError("signature timestamp is not unix seconds")
    sent_at = int(timestamp)
    if abs(now - sent_at) > tolerance_s:
        raise SignatureError(
            f"signature timestamp is {int(now - sent_at)} s from our clock "
            f"(allowed: {tolerance_s} s)"
        )
    given = headers[SIGNATURE].encode()
    nonce = headers[NONCE]
    # compare_digest on every secret, no early exit, keeps the comparison constant-time.
    matches = [
        hmac.compare_digest(sign(secret, body, nonce, timestamp).encode(), given)
        for secret in secrets
    ]
    if not any(matches):
        raise SignatureError("signature does not match the body")
